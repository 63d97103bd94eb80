"""The `payfm` console script: imports the command line, then runs it.

Importing the commands takes about half a second (DuckDB, Arrow, click, Rich); a Ctrl-C in that time would
otherwise end in a KeyboardInterrupt traceback, before the command line's own handling is in place.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from payfm.cli.main import main as run
    except KeyboardInterrupt:
        sys.stderr.write("Aborted!\n")  # what click says for a Ctrl-C once a command runs
        raise SystemExit(130) from None
    run()
