"""When a task of a flow is tried again: one rule for every task, on medr1.errors.is_transient."""

from __future__ import annotations

from medr1.errors import is_transient

RETRY_DELAYS = [30, 120]  # seconds before the second and third try of a transient failure


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect's `retry_condition_fn`: retry a failure that may pass; a failed check, a bad param or a bug
    would fail again."""
    try:
        state.result(raise_on_failure=True)
    except Exception as error:  # noqa: BLE001 - any exception the task raised, re-raised from its state
        return is_transient(error)
    return False
