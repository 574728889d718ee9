"""The train stage on a GPU with a Qwen2-VL-2B-sized, randomly initialised model in bf16.

    python benchmarks/gpu_train.py                     # on a machine with a CUDA GPU
    python benchmarks/gpu_train.py --preset smoke --device cpu --steps 2   # the same path, tiny, on a CPU

It prepares a working folder of its own (the repository's params.yaml with Med-R1's GPU recipe:
learning rate 1e-6, beta 0.04, bf16, gradient checkpointing on CUDA; the synthetic data; a random
model with Qwen2-VL-2B's architecture saved as a local checkpoint) and runs the stages there exactly
as dvc.yaml runs them: `python -m stages.synthesize`, `ingest`,
`base_model` (kind local), `train`, then `medr1 evaluate` on the test split. It prints one table:
steps/s, completions/s and peak GPU memory of the train stage, questions/s of the evaluation.
The model is random, so its rewards stay near 0: this measures the machinery, not learning.
Nothing is downloaded; the repository's own params.yaml and outputs are not touched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # medr1, for building the random model in this process

# Qwen2-VL-2B-Instruct's config.json, except the vocabulary: our tokenizer's 1,024 tokens, padded to
# Qwen2-VL's 151,936 rows so the embedding matrices are as large as the real model's.
PRESETS = {
    "qwen2-vl-2b": {
        "architecture": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                         "num_attention_heads": 12, "num_key_value_heads": 2, "vision_depth": 32,
                         "vision_embed_dim": 1280, "vision_num_heads": 16, "image_side": 384},
        "vision_mlp_ratio": 4, "max_positions": 32768, "vocab_size": 151936,
    },
    "smoke": {
        "architecture": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "num_key_value_heads": 2, "vision_depth": 2,
                         "vision_embed_dim": 64, "vision_num_heads": 4, "image_side": 112},
        "vision_mlp_ratio": 2, "max_positions": 2048, "vocab_size": None,
    },
}


def work_params(args) -> dict:
    """The repository's params.yaml with this run's settings: Med-R1's GRPO recipe at a GPU's scale."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["synthetic"]["images_per_modality"] = args.images
    params["base_model"].update(kind="local", path=str((args.work / "random-model").resolve()))
    params["train"].update(
        device=args.device, max_steps=args.steps, checkpoint_steps=args.checkpoint_steps, learning_rate=1e-6,
        per_device_train_batch_size=args.batch, num_generations=args.generations,
        max_completion_length=args.completion_length, beta=0.04, gradient_checkpointing=args.device == "cuda",
        logging_steps=max(1, min(5, args.steps)),
    )
    params["evaluate"].update(device=args.device, batch_size=32)
    return params


def build_random_model(work: Path, preset: dict, device: str) -> int:
    """A randomly initialised Qwen2-VL at the preset's sizes, with a tokenizer trained on the train
    split's text, saved in bf16 as a from_pretrained folder. Returns its parameter count."""
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    from medr1.config import TinyArchitecture
    from medr1.data.records import read_jsonl
    from medr1.tiny.build import tokenizer_corpus
    from medr1.tiny.model import build_processor, qwen2vl_config, set_generation_tokens, train_tokenizer

    records = list(read_jsonl(work / "data/processed/train.jsonl"))
    tokenizer = train_tokenizer(tokenizer_corpus(records, 0), 1024)
    arch = TinyArchitecture(vocab_size=1024, **preset["architecture"])
    config = qwen2vl_config(tokenizer, arch, preset["vision_mlp_ratio"], preset["max_positions"], preset["vocab_size"])
    torch.manual_seed(0)
    with torch.device(device):  # initialising 2B weights is much faster on the GPU
        model = Qwen2VLForConditionalGeneration(config)
    set_generation_tokens(model, tokenizer)
    target = work / "random-model"
    model.to(torch.bfloat16).save_pretrained(target)  # as Qwen2-VL-2B-Instruct ships
    build_processor(tokenizer, arch.image_side).save_pretrained(target)
    return sum(p.numel() for p in model.parameters())


def run(work: Path, log: Path, *command: str) -> tuple[str, float]:
    """`command` in the working folder with the stage's environment; its output goes to `log` too."""
    env = {**os.environ, "PYTHONPATH": f"{work}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    result = subprocess.run(command, check=False, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    with log.open("a") as stream:
        stream.write(f"$ {' '.join(command)}  ({seconds:.1f} s, exit {result.returncode})\n"
                     f"{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        sys.exit(f"`{' '.join(command)}` failed (exit {result.returncode}); the end of its output:\n"
                 + (result.stdout + result.stderr)[-3000:])
    return result.stdout + result.stderr, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="qwen2-vl-2b",
                        help="model sizes (default: qwen2-vl-2b)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="train.device and evaluate.device")
    parser.add_argument("--steps", type=int, default=20, help="GRPO optimizer steps (default 20)")
    parser.add_argument("--batch", type=int, default=16,
                        help="completions per step (train.per_device_train_batch_size)")
    parser.add_argument("--generations", type=int, default=8, help="completions per prompt (train.num_generations)")
    parser.add_argument("--completion-length", type=int, default=128, help="train.max_completion_length")
    parser.add_argument("--checkpoint-steps", type=int, default=10_000,
                        help="train.checkpoint_steps (default: none within the run; "
                             "a 2B checkpoint with Adam is ~26 GB)")
    parser.add_argument("--images", type=int, default=12,
                        help="synthetic images per modality (x 8 modalities, 5 questions each)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medr1-gpu-train"), help="the working folder (replaced)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    for package in ("medr1", "stages"):
        (args.work / package).symlink_to(REPO / package)
    (args.work / "params.yaml").write_text(yaml.safe_dump(work_params(args), sort_keys=False))
    log = args.work / "stages.log"
    python = sys.executable
    results: dict = {"preset": args.preset, "device": args.device, "steps": args.steps, "batch": args.batch,
                     "generations": args.generations, "completion_length": args.completion_length}

    for stage in ("synthesize", "ingest"):
        run(args.work, log, python, "-m", f"stages.{stage}")
    started = time.perf_counter()
    results["parameters"] = build_random_model(args.work, PRESETS[args.preset], args.device)
    results["build_model_s"] = round(time.perf_counter() - started, 1)
    run(args.work, log, python, "-m", "stages.base_model")

    output, seconds = run(args.work, log, python, "-m", "stages.train")
    results["train_stage_s"] = round(seconds, 1)
    history = json.loads((args.work / "models/grpo/trainer_log.json").read_text())
    runtime = next(entry["train_runtime"] for entry in history if "train_runtime" in entry)
    results["train_runtime_s"] = round(runtime, 1)
    results["steps_per_s"] = round(args.steps / runtime, 3)
    results["completions_per_s"] = round(args.steps * args.batch / runtime, 2)
    memory = re.search(r"peak GPU memory ([\d.]+) GiB allocated, ([\d.]+) GiB reserved \((.+)\)", output)
    if memory:
        results.update(peak_allocated_gib=float(memory[1]), peak_reserved_gib=float(memory[2]), gpu=memory[3])

    test = args.work / "data/processed/test.jsonl"
    questions = len(test.read_text().splitlines())
    output, seconds = run(args.work, log, python, "-m", "medr1.cli", "evaluate", "--model", "models/grpo",
                          "--data", str(test), "--device", args.device, "--json")
    results.update(eval_questions=questions, eval_s=round(seconds, 1),
                   eval_questions_per_s=round(questions / seconds, 2))

    print("\n| measure | value |\n|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:,} |" if isinstance(value, int) else f"| {name} | {value} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
