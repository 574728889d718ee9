"""Our train stage's GRPO against a bare TRL GRPOTrainer script: same model, data and settings.

    .venv/bin/python benchmarks/train.py              # after `make run` (needs models/base, data/processed)
    .venv/bin/python benchmarks/train.py --steps 40 --repeats 2 --generations 8 4

"ours" is `medr1.train.grpo.train_grpo`, what `python -m stages.train` runs: load, dataset, our
trainer (each distinct prompt prepared once a step, each distinct image encoded once a forward),
checkpoints every train.trl.save_steps, resume check, save. "bare" is the few lines a user would
write with TRL's GRPOTrainer alone, on the same base model with the same trainable weights, the same
rewards and GRPOConfig values, and no checkpoints. Both are timed from loading the model to the
saved result, alternating, in one process; samples/s counts completions trained on. Each
`--generations` value (completions per question; the batch stays train.trl.per_device_train_batch_size
completions) is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

DATA = Path("data/processed")
BASE = Path("models/base")


def bare_grpo(model_dir: Path, records, params, output_dir: Path) -> None:
    """TRL's GRPOTrainer as its documentation shows it."""
    import torch
    from datasets import Dataset, Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    from medr1.task.prompts import chat_prompt
    from medr1.task.rewards import reward_functions
    from medr1.tiny.option_reader import is_wired
    from medr1.tiny.training import train_option_words_only
    from medr1.train.trl_config import trl_settings

    grpo = trl_settings(params)
    torch.manual_seed(grpo.seed)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    if is_wired(model):
        train_option_words_only(model, processor.tokenizer, records)
    dataset = Dataset.from_dict({
        "prompt": [chat_prompt(r.question, r.options, params.reasoning, params.prompts) for r in records],
        "image": [str(DATA / r.image) for r in records],
        "answer": [r.answer for r in records],
        "letters": ["".join(r.options) for r in records],
    }).cast_column("image", Image())
    config = GRPOConfig(
        output_dir=str(output_dir), max_steps=grpo.max_steps, learning_rate=grpo.learning_rate,
        weight_decay=0.0, lr_scheduler_type="constant_with_warmup",
        per_device_train_batch_size=grpo.per_device_train_batch_size, num_generations=grpo.num_generations,
        temperature=grpo.temperature, beta=grpo.beta, max_completion_length=grpo.max_completion_length,
        logging_steps=grpo.logging_steps, seed=grpo.seed, use_cpu=True, bf16=False, report_to="none",
        save_strategy="no",
    )
    rewards = reward_functions(params.reward_funcs, params.rewards, params.reasoning)
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=config, train_dataset=dataset,
                          processing_class=processor)
    trainer.train()
    trainer.model.save_pretrained(output_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="GRPO steps per run (default 30)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, alternating (default 2)")
    parser.add_argument("--generations", type=int, nargs="+", default=[8, 4],
                        help="num_generations values to measure (default: 8, the default recipe's, and 4, Med-R1's)")
    args = parser.parse_args()
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from machine import cpu_model
    from transformers.utils import logging as hf_logging

    from medr1.config import load_params
    from medr1.data.records import read_jsonl
    from medr1.model.base import base_model_dir
    from medr1.train.trl_config import trl_settings

    if not (BASE.is_dir() and (DATA / "train.jsonl").is_file()):
        raise SystemExit("run `make run` first: the benchmark trains the pipeline's base model on its train split")
    hf_logging.set_verbosity_error()
    train = load_params().train
    grpo = trl_settings(train)
    every = min(int(grpo.save_steps), max(1, args.steps // 3))
    records = list(read_jsonl(DATA / "train.jsonl"))
    model_dir = base_model_dir(BASE)
    rows = []
    for generations in args.generations:
        params = train.model_copy(update={"trl": {**train.trl, "max_steps": args.steps, "num_generations": generations,
                                                  "save_steps": every}})
        timings = _timed_pair(model_dir, records, params, args.repeats)
        samples = args.steps * grpo.per_device_train_batch_size * grpo.gradient_accumulation_steps
        rows.append((generations, timings, {name: samples / min(values) for name, values in timings.items()}))
    print(f"\n{args.steps} GRPO steps x {grpo.per_device_train_batch_size} completions, checkpoints every "
          f"{every} steps (ours only); best of {args.repeats}; "
          f"{cpu_model()}, {os.cpu_count()} cores")
    print(f"{'generations':>11} {'bare: seconds':>20} {'ours: seconds':>20} {'bare/s':>7} {'ours/s':>7} "
          f"{'ours/bare':>9}")
    for generations, timings, rate in rows:
        print(f"{generations:>11} {', '.join(f'{t:.1f}' for t in timings['bare']):>20} "
              f"{', '.join(f'{t:.1f}' for t in timings['ours']):>20} {rate['bare']:>7.2f} {rate['ours']:>7.2f} "
              f"{rate['ours'] / rate['bare']:>9.3f}")
    print("bar (issue 19): ours/bare at least 1.6 samples/s at each num_generations")
    print(json.dumps({str(generations): {"ours_samples_per_s": rate["ours"], "bare_samples_per_s": rate["bare"]}
                      for generations, _, rate in rows}))


def _timed_pair(model_dir: Path, records, params, repeats: int) -> dict[str, list[float]]:
    from medr1.train.grpo import train_grpo

    timings: dict[str, list[float]] = {"ours": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="medr1-train-bench-") as scratch:
        for repeat in range(repeats):
            for name in ("ours", "bare") if repeat % 2 == 0 else ("bare", "ours"):
                out = Path(scratch) / f"{name}-{repeat}"
                start = time.perf_counter()
                if name == "ours":
                    train_grpo(model_dir, records, DATA, params, out)
                else:
                    bare_grpo(model_dir, records, params, out)
                timings[name].append(time.perf_counter() - start)
                shutil.rmtree(out, ignore_errors=True)
    return timings


if __name__ == "__main__":
    main()
