"""Stage train: GRPO with Med-R1's format and accuracy rewards on the train split.

The run trains in models/grpo.partial (not a DVC output, so DVC leaves it alone). A run that
was killed left checkpoints there; when the next run has the same params, base model, train
split, training code and packages, it resumes from the last checkpoint instead of starting over.
"""

import hashlib
import json
import shutil
from pathlib import Path

from medr1.base_model import base_model_dir, base_reference
from medr1.config import load_params
from medr1.errors import run_main
from medr1.grpo import train_grpo
from medr1.records import read_jsonl
from medr1.staging import publish, staging_for
from medr1.training import peak_gpu_memory
from medr1.training_log import write_training_curves

DATA = Path("data/processed")
BASE = Path("models/base")
OUT = Path("models/grpo")
FINGERPRINT = "run.json"


# The code a checkpoint's meaning depends on: a fix to any of these must not resume an old run.
CODE = ("stages/train.py", "medr1/grpo.py", "medr1/training.py", "medr1/rewards.py", "medr1/prompts.py")


def run_fingerprint(params) -> dict:
    from importlib.metadata import version

    def sha256(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    return {
        "params": params.model_dump(mode="json"),
        "base_model_sha256": base_reference(BASE)["sha256"],
        "train_sha256": sha256(DATA / "train.jsonl"),
        "code_sha256": {name: sha256(Path(name)) for name in CODE},
        "packages": {name: version(name) for name in ("torch", "transformers", "trl", "accelerate", "peft")},
    }


def reuse_or_clear(staging: Path, fingerprint: dict) -> None:
    """Keep `staging` (and its checkpoints) only when it belongs to the same run."""
    marker = staging / FINGERPRINT
    try:
        if json.loads(marker.read_text()) == fingerprint:
            return
    except (OSError, ValueError):  # no run there, or a marker cut short: start over
        pass
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    marker.write_text(json.dumps(fingerprint, indent=1))


def main() -> None:
    from accelerate import PartialState  # one process here; one per GPU under `accelerate launch`

    state = PartialState()
    params = load_params().train
    records = list(read_jsonl(DATA / "train.jsonl"))
    staging = staging_for(OUT, fresh=False)
    if state.is_main_process:
        reuse_or_clear(staging, run_fingerprint(params))
    state.wait_for_everyone()
    history = train_grpo(base_model_dir(BASE), records, DATA, params, staging)
    state.wait_for_everyone()  # every process has cleaned up its own files before the folder is published
    if not state.is_main_process:
        return
    publish(staging, OUT, leave_out=("checkpoints", FINGERPRINT))
    summary = write_training_curves(history, Path("metrics"), Path("reports"))
    print(f"[train] {params.max_steps} GRPO steps; reward {json.dumps(summary)}")
    if memory := peak_gpu_memory():
        print(f"[train] {memory}")


if __name__ == "__main__":
    run_main(main, "train")
