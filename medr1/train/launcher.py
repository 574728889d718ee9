"""Workers that end with their launcher.

torchrun (and `accelerate launch`, which runs it) starts each worker in a session of its own, so a
kill -9 of the launcher's process group, or of the launcher, leaves the workers training on: they
keep writing checkpoints into the folder that the next `dvc repro` resumes from, and the two runs
collide. A worker that asks the kernel for SIGKILL when its parent dies ends with the launcher.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_launcher() -> None:
    """Under a launcher (LOCAL_RANK is set) on Linux: SIGKILL this process when its parent dies."""
    if "LOCAL_RANK" not in os.environ or not sys.platform.startswith("linux"):
        return
    launcher = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != launcher:  # the launcher died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def process_state(device: str):
    """accelerate's view of this process among the launcher's workers. On the CPU it must be told so:
    `PartialState()` alone sees no distributed run there, and every worker would call itself the main
    one (two workers then cleared and wrote the same staging folder at once)."""
    from accelerate import PartialState

    from medr1.model.loading import resolve_device

    return PartialState(cpu=resolve_device(device) == "cpu")

