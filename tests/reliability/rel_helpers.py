"""Assertions shared by the reliability tests."""
from __future__ import annotations

from types import SimpleNamespace


def one_line_error(res, *needles: str, usage: bool = False) -> str:
    """Assert a CLI failure: exit 2, no traceback, stderr one line starting 'error:' (or argparse's usage error)."""
    assert res.returncode == 2, (res.returncode, res.stdout[-1000:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip() and not ln.startswith(("INFO", "WARNING"))]
    if usage:  # argparse: "usage: ..." lines, then "PROG: error: ..."
        assert lines[0].startswith("usage:"), res.stderr
        assert ": error: " in lines[-1], res.stderr
    else:
        assert len(lines) == 1, res.stderr
        assert lines[0].startswith("error:"), res.stderr
    for n in needles:
        assert n in lines[-1], (n, lines[-1])
    return lines[-1]


def cli(capsys, *args) -> SimpleNamespace:  # noqa: ANN001
    """`python -m engine ARGS` in-process (no interpreter start-up): returncode, stdout, stderr."""
    from engine.cli import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse errors
        rc = e.code
    out = capsys.readouterr()
    return SimpleNamespace(returncode=rc, stdout=out.out, stderr=out.err)
