"""The README's command-line tour stays valid: every `python -m engine …` / `torchrun … -m engine …` line parses
with the engine's own argument parser (flags, choices, value types), and the tour writes only under work/.

The tour itself was run top to bottom in a fresh clone (see the README); this test keeps its flags from
drifting as commands change, in under a second.
"""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from engine.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def tour_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("A tour that runs top to bottom")
    body = text[text.index("```bash\n", start) + len("```bash\n"):]
    body = body[:body.index("```")].replace("\\\n", " ")
    return [line.split(" #")[0].strip() for line in body.splitlines() if line.strip()]


def engine_argv(line: str) -> list[str] | None:
    words = shlex.split(line)
    if "-m" in words and words[words.index("-m") + 1] == "engine":
        return words[words.index("-m") + 2:]
    return None


def test_the_tour_has_engine_commands() -> None:
    assert sum(engine_argv(line) is not None for line in tour_lines()) >= 25


@pytest.mark.parametrize("line", [line for line in tour_lines() if engine_argv(line) is not None])
def test_each_tour_command_parses(line: str) -> None:
    argv = engine_argv(line)
    assert argv is not None
    args = build_parser().parse_args(argv)  # exits (SystemExit 2) on an unknown flag or a bad value
    assert args.command == argv[0]


def test_the_tour_writes_only_under_work() -> None:
    """Output flags and positional outputs point into work/ (the shipped assets are read, never written)."""
    for line in tour_lines():
        words = shlex.split(line)
        for flag in ("--out", "--json"):
            if flag in words:
                assert words[words.index(flag) + 1].startswith("work/"), line
        if words[:1] == ["cp"]:
            assert words[-1].startswith("work/"), line
