"""`python -m engine …`: every engine step from a shell. Each sub-command lives in engine/commands/."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# module name in engine.commands → each defines register(subparsers)
COMMAND_MODULES = ["data_cmd", "pretrain_cmd", "sample_cmd", "export_cmd"]
OPTIONAL_COMMAND_MODULES = ["segmentation_cmds", "compare_cmd", "video_cmds", "labelling_cmds", "uncertainty_cmd"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(prog="python -m engine", description="DiffSeg Studio engine")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES + OPTIONAL_COMMAND_MODULES:
        try:
            module = importlib.import_module(f"engine.commands.{name}")
        except ModuleNotFoundError as e:
            if name in OPTIONAL_COMMAND_MODULES and e.name == f"engine.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and turn expected failures into one clear line on stderr (exit 2), not a traceback."""
    from .errors import USER_ERRORS, out_of_memory

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:  # a size nobody bounded yet: one line, not a MemoryError traceback
        if args.verbose or not out_of_memory(e):
            raise
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        print(f"error: {args.command}: out of memory ({detail}); use smaller sizes (images, --batch-size, "
              "--n, --members, --label-size)", file=sys.stderr)
        return 2
