"""One way for stages and commands to fail on expected problems.

An expected failure is a `PipelineError` (or a subclass: bad params, bad data, a store or registry
that refuses, a missing file), raised where the cause is known, with a message that names the
problem and what to do. It ends a stage or command with that message and exit status 1. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class PipelineError(RuntimeError):
    """A stage or command cannot go on; the message names the problem and what to do."""


class MissingFileError(PipelineError):
    """A file or folder the run needs is not there; the message names it and what writes it."""


class DataError(PipelineError):
    """Input data is malformed; the message names the file and the record."""


def run_main(main: Callable[[], None], name: str) -> None:
    """Run a stage's `main`: an expected failure prints one line, anything else its traceback."""
    try:
        main()
    except PipelineError as error:
        print(f"[{name}] error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
