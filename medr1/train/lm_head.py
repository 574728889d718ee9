"""TRL's fused LM head on the CPU: score the labelled positions only, as it does where Triton runs."""

from __future__ import annotations

import threading
from contextlib import contextmanager

# sha256 of the source of the TRL function this relies on: the forward that `add_fused_lm_head` installs
# scores only the labelled positions where `_use_triton(device)`; a TRL upgrade that changes it fails
# tests/test_grpo_trainer.py until this module is checked against the new code.
TRL_FUNCTIONS = {
    "trl.trainer.utils.add_fused_lm_head": "422d009f04b66659982f9545a90d560bdcc27fde3268de203d0c5c6d1449d211",
}


@contextmanager
def completion_positions_scored():
    """TRL's fused LM head scores only the labelled positions (the completions) where its Triton
    kernels run, and every position elsewhere, so that a compiler (Neuron) sees one tile shape. On the
    CPU nothing is compiled, and scoring the prompt positions too was 7 times the head's work (95
    prompt tokens to 16 completion tokens on the default) for log-probabilities that are then masked
    out: about a sixth of a default GRPO step. Inside this context the CPU takes TRL's compact path;
    Triton's kernels still run only where TRL runs them (the kernel module asks on its own). Nested or
    overlapping uses (threads) share one patch, removed when the last one leaves."""
    global _users, _original
    import trl.trainer.utils as trl_utils

    with _lock:
        if _users == 0:
            _original, trl_utils._use_triton = trl_utils._use_triton, _compact_on_the_cpu_too
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                trl_utils._use_triton = _original


def _compact_on_the_cpu_too(device) -> bool:
    return device.type == "cpu" or _original(device)


_lock = threading.Lock()
_users = 0  # contexts open now
_original = None  # TRL's own `_use_triton`, while patched
