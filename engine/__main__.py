"""Entry point for `python -m engine`.

When $DIFFSEG_EXIT_FILE is set (background jobs, engine/app/jobs.py), the exit code is written there, so a job
started by another process (a dashboard before a restart) still learns how it ended.
"""
import os
import sys

from .cli import main


def _run() -> int:
    code: object = 1  # stays 1 when main() raises
    try:
        code = main()
    except SystemExit as e:  # argparse errors, sys.exit in commands
        code = e.code
    finally:
        rc = code if isinstance(code, int) else (0 if code is None else 1)
        exit_file = os.environ.get("DIFFSEG_EXIT_FILE")
        if exit_file:
            from .atomic import write_text_atomic

            write_text_atomic(exit_file, f"{rc}\n")
    return rc


sys.exit(_run())
