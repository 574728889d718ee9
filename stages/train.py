"""Stage train: GRPO with Med-R1's format and accuracy rewards on the train split."""

import json
import shutil
from pathlib import Path

from medr1.base_model import base_model_dir
from medr1.config import load_params
from medr1.errors import run_main
from medr1.grpo import train_grpo
from medr1.records import read_jsonl
from medr1.training_log import write_training_curves

DATA = Path("data/processed")
OUT = Path("models/grpo")


def main() -> None:
    params = load_params().train
    records = list(read_jsonl(DATA / "train.jsonl"))
    staging = OUT.with_name(OUT.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    history = train_grpo(base_model_dir(Path("models/base")), records, DATA, params, staging)
    shutil.rmtree(staging / "checkpoints", ignore_errors=True)
    shutil.rmtree(OUT, ignore_errors=True)
    staging.rename(OUT)
    summary = write_training_curves(history, Path("metrics"), Path("reports"))
    print(f"[train] {params.max_steps} GRPO steps; reward {json.dumps(summary)}")


if __name__ == "__main__":
    run_main(main, "train")
