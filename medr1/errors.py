"""One way for stages and commands to fail on expected problems.

An expected failure is a `PipelineError` (or a subclass: bad params, bad data, a store or registry
that refuses, a missing file), raised where the cause is known, with a message that names the
problem and what to do. It ends a stage or command with that message and exit status 1. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import re
import sys
from collections.abc import Callable


class PipelineError(RuntimeError):
    """A stage or command cannot go on; the message names the problem and what to do."""


class MissingFileError(PipelineError):
    """A file or folder the run needs is not there; the message names it and what writes it."""


class DataError(PipelineError):
    """Input data is malformed; the message names the file and the record."""


class ImageError(DataError):
    """The image cannot be used; the message says why."""


class TransientError(PipelineError):
    """A failure that a second try may cure: a killed process, a lock another run held, a remote or
    worker that did not answer. Everything else fails the same way again and is not retried."""


class NoSpaceError(PipelineError):
    """A write failed for lack of space (a full disk, a quota, a file size limit)."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# The same failure as the libraries that write checkpoints word it: safetensors' Rust I/O error
# ("os error 27"), torch.save's stream writer, which gives no errno.
_NO_SPACE_WORDS = re.compile(rf"os error ({'|'.join(map(str, NO_SPACE))})\b|No space left on device|File too large|"
                             r"Disk quota exceeded|file write failed")


def no_space(error: BaseException) -> NoSpaceError | None:
    """`error` as a NoSpaceError when it is a write that ran out of space, else None."""
    if isinstance(error, OSError) and error.errno in NO_SPACE:
        where, cause = f" writing {error.filename}" if error.filename else "", error.strerror
    elif not isinstance(error, OSError) and (found := _NO_SPACE_WORDS.search(str(error))):
        where, cause = "", found.group(0)
    else:
        return None
    return NoSpaceError(f"no space left{where} ({cause}): free space and run again; the stage's previous outputs "
                        "are as they were and nothing half-written was published (a checkpoint cut short is passed "
                        "over when training resumes)")


def is_transient(error: BaseException | None) -> bool:
    """Whether trying again may help: the one predicate behind every retry (flows' `retry_condition_fn`)."""
    return isinstance(error, TransientError | ConnectionError | TimeoutError)


def run_main(main: Callable[[], None], name: str) -> None:
    """Run a stage's `main`: an expected failure prints one line, anything else its traceback.
    A write that runs out of space is expected: stages write into staging folders and publish whole."""
    try:
        main()
    except Exception as error:  # only a PipelineError, or what no_space recognises, is expected; the rest re-raises
        expected = error if isinstance(error, PipelineError) else no_space(error)
        if expected is None:
            raise
        print(f"[{name}] error: {expected}", file=sys.stderr)
        raise SystemExit(1) from None
