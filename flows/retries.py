"""When a task of a flow is tried again: one rule for every task, on medr1.errors.is_transient.

MEDR1_RETRY_DELAYS sets the seconds before the second and third try (default "30,120"; the last delay
repeats for a cell's later tries): a shorter wait for a remote that comes back quickly, a longer one for a
cluster that reschedules slowly. The loopback tests set it short, so that they wait for what they test
rather than for the clock."""

from __future__ import annotations

import os

from medr1.errors import PipelineError, is_transient

DELAYS_VARIABLE = "MEDR1_RETRY_DELAYS"
DEFAULT_DELAYS = [30.0, 120.0]
_EXAMPLE = ",".join(f"{delay:g}" for delay in DEFAULT_DELAYS)


def retry_delays(environ=os.environ) -> list[float]:
    """The delays MEDR1_RETRY_DELAYS names, as comma-separated seconds; DEFAULT_DELAYS when it is unset."""
    raw = environ.get(DELAYS_VARIABLE, "").strip()
    if not raw:
        return list(DEFAULT_DELAYS)
    try:
        delays = [float(item) for item in raw.split(",")]
    except ValueError as error:
        raise PipelineError(f"{DELAYS_VARIABLE}={raw!r}: give the seconds before each further try, separated by "
                            f"commas, as in {_EXAMPLE}") from error
    if len(delays) != len(DEFAULT_DELAYS) or any(delay < 0 for delay in delays):
        raise PipelineError(f"{DELAYS_VARIABLE}={raw!r}: give {len(DEFAULT_DELAYS)} delays of 0 s or more (one "
                            f"before each further try), as in {_EXAMPLE}")
    return delays


RETRY_DELAYS = retry_delays()  # seconds before the second and third try of a transient failure


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect's `retry_condition_fn`: retry a failure that may pass; a failed check, a bad param or a bug
    would fail again."""
    try:
        state.result(raise_on_failure=True)
    except Exception as error:  # noqa: BLE001 - any exception the task raised, re-raised from its state
        return is_transient(error)
    return False
