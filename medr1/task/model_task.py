"""The task a model was trained on, as its folder records it: medr1_task.json beside the weights
(reasoning layout, prompt style, reward variant), written when training saves the model. `medr1 evaluate`
outside the pipeline's checkout reads it back, so a model is asked in the layout it learned without
params.yaml at hand; a registered version written before this file existed answers from its manifest's
params instead."""

from __future__ import annotations

import json
from pathlib import Path

from medr1.errors import PipelineError
from medr1.task.prompts import PROMPT_STYLES, REASONING_MODES
from medr1.task.rewards import REWARD_VARIANTS
from medr1.task.spec import TaskSpec

TASK_FILE = "medr1_task.json"
KNOWN = {"reasoning": REASONING_MODES, "prompts": PROMPT_STYLES, "rewards": REWARD_VARIANTS}


def write_model_task(folder: Path, task: TaskSpec) -> None:
    (folder / TASK_FILE).write_text(json.dumps({"reasoning": task.mode, "prompts": task.prompts,
                                                "rewards": task.rewards}, indent=1) + "\n")


def recorded_task(folder: Path, manifest: dict | None = None) -> dict[str, str]:
    """What `folder`'s medr1_task.json records of {"reasoning", "prompts", "rewards"}, else what the registry
    `manifest`'s train params do (a version registered before the file existed); {} when neither says.
    A key left out is not recorded; a value no task knows is an error naming where it was read."""
    path = folder / TASK_FILE
    if path.is_file():
        try:
            recorded, where = json.loads(path.read_text()), str(path)
        except ValueError as error:
            raise PipelineError(f"{path} is not readable JSON ({error}): rewrite or remove it") from error
    elif manifest is not None and isinstance(manifest.get("params", {}).get("train"), dict):
        recorded, where = manifest["params"]["train"], f"the manifest of version {manifest.get('version')}"
    else:
        return {}
    if not isinstance(recorded, dict):
        raise PipelineError(f"{where} holds no task (a JSON object with reasoning, prompts and rewards)")
    task = {key: recorded[key] for key in KNOWN if key in recorded}
    for key, value in task.items():
        if value not in KNOWN[key]:
            raise PipelineError(f"{where} records {key} {value!r}, not one of {', '.join(KNOWN[key])}")
    return task
