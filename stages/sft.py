"""Stage sft: the supervised baseline that Med-R1 compares GRPO with, on the same train split."""

from pathlib import Path

from medr1.config import load_params
from medr1.data.records import read_jsonl
from medr1.errors import run_main
from medr1.model.base import base_model_dir
from medr1.model.loading import peak_gpu_memory
from medr1.pipeline.staging import publish, staging_for
from medr1.train.sft import train_sft

DATA = Path("data/processed")
OUT = Path("models/sft")


def main() -> None:
    params = load_params()
    records = list(read_jsonl(DATA / "train.jsonl"))
    staging = staging_for(OUT)
    history = train_sft(base_model_dir(Path("models/base")), records, DATA, params.sft, params.train, staging)
    publish(staging, OUT, leave_out=("checkpoints",))
    losses = [entry["loss"] for entry in history if "loss" in entry]
    print(f"[sft] {params.sft.max_steps} steps; loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "[sft] done")
    if memory := peak_gpu_memory():
        print(f"[sft] {memory}")


if __name__ == "__main__":
    run_main(main, "sft")
