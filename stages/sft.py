"""Stage sft: the supervised baseline that Med-R1 compares GRPO with, on the same train split (train.group's
file when set, as the train stage).

It runs under sft.launcher, or train.launcher where that is null: one process here, one per GPU
under `accelerate launch` (Med-R1 trains its SFT baseline on 2 GPUs with DeepSpeed ZeRO-2, clipping at 1.0,
whatever launch its GRPO run had).
"""

from pathlib import Path

from medr1.config import load_params
from medr1.data.records import read_jsonl
from medr1.data.splits import train_split
from medr1.errors import run_main
from medr1.model.base import base_model_dir
from medr1.model.loading import peak_gpu_memory
from medr1.pipeline.staging import publish, staging_for
from medr1.train.launcher import end_with_launcher, process_state
from medr1.train.sft import train_sft

DATA = Path("data/processed")
OUT = Path("models/sft")


def main() -> None:
    end_with_launcher()  # a killed launcher takes its workers with it
    params = load_params()
    state = process_state(params.train.device)
    records = list(read_jsonl(train_split(DATA, params.train.group)))
    staging = staging_for(OUT, fresh=state.is_main_process)  # emptied once, by the main process
    state.wait_for_everyone()
    history = train_sft(base_model_dir(Path("models/base")), records, DATA, params.sft, params.train, staging)
    state.wait_for_everyone()
    if not state.is_main_process:
        return
    publish(staging, OUT, leave_out=("checkpoints",))
    losses = [entry["loss"] for entry in history if "loss" in entry]
    steps = max((entry.get("step", 0) for entry in history), default=0)
    print(f"[sft] {steps} steps; loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else f"[sft] {steps} steps")
    if memory := peak_gpu_memory():
        print(f"[sft] {memory}")


if __name__ == "__main__":
    run_main(main, "sft")
