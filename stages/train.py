"""Stage train: GRPO with Med-R1's format and accuracy rewards on the train split (train.group's file
when set: Med-R1 trains each model on one modality's questions).

The run trains in models/grpo.partial (not a DVC output, so DVC leaves it alone). A run that
was killed left checkpoints there; when the next run has the same params, base model, train
split, training code (the stage's code deps in dvc.yaml) and packages, it resumes from the last
checkpoint instead of starting over.
"""

import json
from pathlib import Path

from medr1.config import load_params
from medr1.data.records import read_jsonl
from medr1.data.splits import train_split
from medr1.errors import run_main
from medr1.model.base import base_model_dir, base_reference
from medr1.model.loading import peak_gpu_memory, resolve_device
from medr1.pipeline.staging import publish, staging_for
from medr1.train.curves import write_training_curves
from medr1.train.grpo import train_grpo
from medr1.train.launcher import end_with_launcher, process_state
from medr1.train.memory_plan import stage_line
from medr1.train.resume import FINGERPRINT, reuse_or_clear, run_fingerprint
from medr1.train.trl_config import trl_settings

DATA = Path("data/processed")
BASE = Path("models/base")
OUT = Path("models/grpo")
LOGS = Path("metrics/train")  # DVCLive: metrics.json (dvc exp show) and plots/ (dvc plots)


def main() -> None:
    end_with_launcher()  # a killed launcher takes its workers with it
    everything = load_params()
    params = everything.train
    state = process_state(params.device)  # one process here; one per GPU (or CPU worker) under a launcher
    split = train_split(DATA, params.group)
    records = list(read_jsonl(split))
    if state.is_main_process:  # from config.json and the params: nothing loaded, nothing on a GPU yet
        print(stage_line(everything, base_model_dir(BASE), resolve_device(params.device), len(records)), flush=True)
    staging = staging_for(OUT, fresh=False)
    if state.is_main_process:
        reuse_or_clear(staging, run_fingerprint(params, base_reference(BASE)["sha256"], split))
    state.wait_for_everyone()
    history = train_grpo(base_model_dir(BASE), records, DATA, params, staging, log_dir=LOGS)
    state.wait_for_everyone()  # every process has cleaned up its own files before the folder is published
    if not state.is_main_process:
        return
    publish(staging, OUT, leave_out=("checkpoints", FINGERPRINT))
    summary = write_training_curves(history, Path("reports"))
    print(f"[train] {trl_settings(params).max_steps} GRPO steps on {split} ({len(records)} questions); "
          f"reward {json.dumps(summary)}")
    if memory := peak_gpu_memory():
        print(f"[train] {memory}")


if __name__ == "__main__":
    run_main(main, "train")
