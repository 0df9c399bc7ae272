"""`kotomi-backup`: the engine from the command line, with or without Dagster running.

Exit codes: 0 success, 1 the operation failed, 2 bad usage or configuration, 130 interrupted.
Every failure is one line on stderr; `--debug` adds the traceback.

One module per command (`backup.py`, `listing.py`, `restore.py`...), each with `add_to`
(its arguments) and `run` (the command); `main.py` parses and turns errors into one line
and an exit code; `arguments.py` and `output.py` hold what the commands share. A command
imports the engine when it runs, so `--help` and the other commands do not pay for it.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
