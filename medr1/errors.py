"""One way for stages and commands to fail: a readable message and exit status 1, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from medr1.config import ParamsError
from medr1.images import ImageError
from medr1.registry import RegistryError
from medr1.store import StoreError


class PipelineError(RuntimeError):
    """A stage cannot go on; the message names the problem and what to do."""


EXPECTED = (PipelineError, ParamsError, ImageError, RegistryError, StoreError, FileNotFoundError, ValueError)


def run_main(main: Callable[[], None], name: str) -> None:
    try:
        main()
    except EXPECTED as error:
        print(f"[{name}] error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
