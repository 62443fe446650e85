"""Assertions shared by the reliability tests."""
from __future__ import annotations


def one_line_error(res, *needles: str, usage: bool = False) -> str:
    """Assert a CLI failure: exit 2, no traceback, a last stderr line starting 'error:' (or argparse's usage error)."""
    assert res.returncode == 2, (res.returncode, res.stdout[-1000:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip() and not ln.startswith(("INFO", "WARNING"))]
    if usage:
        assert lines[0].startswith("usage:"), res.stderr
        assert "error:" in lines[-1], res.stderr
    else:
        assert len(lines) == 1, res.stderr
        assert lines[0].startswith("error:"), res.stderr
    for n in needles:
        assert n in lines[-1], (n, lines[-1])
    return lines[-1]
