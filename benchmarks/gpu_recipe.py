"""The `med-r1` recipe's train and evaluate on a GPU, on a 2B-sized checkpoint folder shaped like a
download, side by side with TRL's bare GRPOTrainer and with plain `generate`, in one run.

    python benchmarks/gpu_recipe.py                          # on a machine with a CUDA GPU
    python benchmarks/gpu_recipe.py --steps 30 --json $OUT/gpu_recipe.json
    python benchmarks/gpu_recipe.py --preset smoke --device cpu --steps 2 --eval-questions 8   # the path, on a CPU
    python benchmarks/gpu_recipe.py --dry-run                # the plan: settings and commands, nothing run

In a working folder of its own (the repository's params.yaml with the recipe applied; the synthetic
data instead of OmniMedVQA, which is not downloaded; `base_model.kind: local` at the folder below;
`train.trl.max_steps` N; the recipe's launcher only with --launcher) it:

1. writes a randomly initialised Qwen2-VL (or Qwen2.5-VL) folder at the preset's sizes with
   `medr1.synthetic.checkpoints.write_checkpoint`: an 8k byte-level BPE tokenizer trained on the
   split's text, the family's chat template, image settings and generation config, saved in bf16,
   its embeddings padded to Qwen2-VL's 151,936 rows so that memory is the real model's;
2. runs `stages.synthesize`, `stages.ingest`, `stages.base_model` and `stages.train` as dvc.yaml runs
   them (the recipe's batch, generations, completion length, beta, pixel limits, prompts, rewards);
3. trains the same folder for the same steps with TRL's `GRPOTrainer` and nothing of ours (the same
   prompts, images, batch, generations, completion length, beta, learning rate; one rule reward);
4. evaluates the trained model on the test split with our decoder and with plain `generate`
   (greedy, the recipe's max_new_tokens and grading), and checks both grade every question the same.

It prints one table, ours beside the baseline: steps/s, completions/s, peak GPU memory, questions/s.
The model is random, so rewards stay near 0: this measures the machinery, not learning. Nothing is
downloaded, and the repository's own params.yaml and outputs are not touched.

Attention: `--attention auto` (the default) takes flash-attention 2 on CUDA where flash-attn imports and
PyTorch's sdpa elsewhere, as `train.attn_implementation: auto` does, and prints which and why (Med-R1's
recipes name flash_attention_2); ours and the bare trainer both use it. `--attention flash_attention_2`
without flash-attn is refused before anything runs.
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
sys.path.insert(0, str(REPO))

from medr1.synthetic.checkpoints import Sizes

PRESETS = {  # Qwen2-VL-2B-Instruct's config.json, and a size that runs on a CPU in a minute
    "qwen2-vl-2b": Sizes(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vision_depth=32, vision_hidden_size=1280, vision_num_heads=16,
                         max_position_embeddings=32768, embedding_rows=151936),
    "smoke": Sizes(),
}
BARE_TRL = "--bare-trl-in"  # the script runs itself with this to train TRL's GRPOTrainer in its own process


def work_params(args, attention: str) -> dict:
    """params.yaml with the recipe applied, then only what this machine and benchmark need changed."""
    from medr1.pipeline.recipes import apply_recipe

    shutil.copy(REPO / "params.yaml", args.work / "params.yaml")
    apply_recipe(args.recipe, args.work / "params.yaml", REPO / "recipes")
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    params = yaml.safe_load((args.work / "params.yaml").read_text())
    params["ingest"] = {**defaults["ingest"], "image_size": params["ingest"]["image_size"]}
    params["ingest"]["synthetic"]["images_per_modality"] = args.images
    params["validate"] = defaults["validate"]
    params["base_model"].update(kind="local", path=str((args.work / "checkpoint").resolve()))
    params["train"].update(device=args.device, launcher=args.launcher, attn_implementation=attention)
    params["train"]["trl"].update(max_steps=args.steps, save_steps=10**6)
    if args.max_completion_length:
        params["train"]["trl"]["max_completion_length"] = args.max_completion_length
    params["evaluate"]["device"] = args.device
    if args.max_new_tokens:
        params["evaluate"]["max_new_tokens"] = args.max_new_tokens
    return params


def chosen_attention(args, recipe_value: str) -> tuple[str, str]:
    """The attention both trainers use, and a line saying why: a kernel that is missing is said, never hidden.
    The train stage's own rule (medr1.model.loading.resolve_attention), refusals included."""
    from medr1.errors import PipelineError
    from medr1.model.loading import resolve_attention

    try:
        chosen = resolve_attention(args.attention, args.device)
    except PipelineError as error:
        sys.exit(f"--attention {args.attention}: {error}")
    return chosen.implementation, f"attention: {chosen.implementation} ({chosen.reason}; the recipe: {recipe_value})"


def run(work: Path, log: Path, command: str) -> tuple[str, float]:
    """A shell command line in the working folder; its output goes to `log` too."""
    env = {**os.environ, "PYTHONPATH": f"{work}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # python, accelerate: this one's
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    result = subprocess.run(command, shell=True, check=False, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    with log.open("a") as stream:
        stream.write(f"$ {command}  ({seconds:.1f} s, exit {result.returncode})\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        sys.exit(f"`{command}` failed (exit {result.returncode}); the end of its output:\n"
                 + (result.stdout + result.stderr)[-3000:])
    return result.stdout + result.stderr, seconds


def training_speed(history: list[dict], steps: int, completions_per_step: int) -> dict:
    runtime = next(entry["train_runtime"] for entry in history if "train_runtime" in entry)
    return {"runtime_s": round(runtime, 1), "steps_per_s": round(steps / runtime, 3),
            "completions_per_s": round(steps * completions_per_step / runtime, 2)}


def bare_trl(work: Path) -> dict:
    """TRL's GRPOTrainer on the working folder's checkpoint and train split, with the recipe's
    numbers and none of our code on the training path (this process loads only TRL and transformers)."""
    import torch
    from datasets import Dataset, Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    from medr1.task.prompts import chat_prompt  # the same prompt text as ours; the rest is TRL's

    params = yaml.safe_load((work / "params.yaml").read_text())
    train, trl = params["train"], params["train"]["trl"]
    checkpoint = Path(params["base_model"]["path"])
    records = [json.loads(line) for line in (work / "data/processed/train.jsonl").read_text().splitlines()]
    processor = AutoProcessor.from_pretrained(checkpoint)
    if train["max_pixels"]:
        processor.image_processor.size = {"shortest_edge": train["min_pixels"], "longest_edge": train["max_pixels"]}
    prompts = [chat_prompt(r["question"], r["options"], train["reasoning"], train["prompts"]) for r in records]
    images = [str(work / "data/processed" / r["image"]) for r in records]
    dataset = Dataset.from_dict({"prompt": prompts, "image": images, "answer": [r["answer"] for r in records]})
    dataset = dataset.cast_column("image", Image())

    def answer_reward(completions, answer, **_):
        return [float(f"<answer>{gold}</answer>" in completion[0]["content"])
                for completion, gold in zip(completions, answer, strict=True)]

    cuda = train["device"] != "cpu" and torch.cuda.is_available()
    args = GRPOConfig(
        output_dir=str(work / "bare-trl"), max_steps=trl["max_steps"], learning_rate=trl["learning_rate"],
        per_device_train_batch_size=trl["per_device_train_batch_size"],
        gradient_accumulation_steps=trl["gradient_accumulation_steps"], num_generations=trl["num_generations"],
        max_completion_length=trl["max_completion_length"], beta=trl["beta"], temperature=trl["temperature"],
        activation_checkpointing=trl["activation_checkpointing"], bf16=cuda, use_cpu=not cuda, logging_steps=1,
        save_strategy="no", report_to="none", seed=trl["seed"])
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32,
                                                        attn_implementation=train["attn_implementation"])
    trainer = GRPOTrainer(model=model, reward_funcs=answer_reward, args=args, train_dataset=dataset,
                          processing_class=processor)
    trainer.train()
    result = training_speed(trainer.state.log_history, trl["max_steps"],
                            trl["per_device_train_batch_size"] * trl["gradient_accumulation_steps"])
    if cuda:
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    return result


def evaluation_speed(work: Path, limit: int | None) -> dict:
    """Our decoder and plain `generate` on the trained model, the same questions, batch and grading."""
    import torch

    from medr1.config import load_params
    from medr1.data.records import read_jsonl
    from medr1.evaluate.decoding import evaluation_images, generate_completions, plain_completions
    from medr1.model.loading import load_for_evaluation
    from medr1.task.spec import evaluation_tasks

    params = load_params(work / "params.yaml")
    task, _ = evaluation_tasks(params)
    records = list(read_jsonl(work / "data/processed/test.jsonl"))[:limit]
    model, processor = load_for_evaluation(work / "models/grpo", params.evaluate.device)
    settings = params.evaluate
    results = {}
    texts = {}
    for name in ("ours", "generate"):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        cache = evaluation_images(processor, task)
        started = time.perf_counter()
        if name == "ours":
            texts[name] = generate_completions(model, processor, records, work / "data/processed", task,
                                               settings.batch_size, settings.max_new_tokens, cache, progress=False)
        else:
            texts[name] = plain_completions(model, processor, records, work / "data/processed", task,
                                            settings.batch_size, settings.max_new_tokens, cache)
        seconds = time.perf_counter() - started
        results[name] = {"questions_per_s": round(len(records) / seconds, 2), "s": round(seconds, 1)}
        if torch.cuda.is_available():
            results[name]["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    grades = {name: [task.grade(text, r.answer, "".join(r.options)) for text, r in zip(outputs, records, strict=True)]
              for name, outputs in texts.items()}
    results["questions"] = len(records)
    results["same_grades"] = grades["ours"] == grades["generate"]
    return results


def print_plan(args, attention: str) -> None:
    """What a run with these arguments would set and run (the recipe applied in a scratch folder)."""
    import tempfile

    work = args.work
    with tempfile.TemporaryDirectory() as scratch:
        args.work = Path(scratch)
        params = work_params(args, attention)
    args.work = work
    train, sizes = params["train"], PRESETS[args.preset]
    trl = train["trl"]  # TRL's settings by their TRL names (train.trl)
    print(f"plan: {args.recipe} on a random {args.family} at the {args.preset} sizes ({sizes.num_hidden_layers} "
          f"layers of {sizes.hidden_size}, vision {sizes.vision_depth} x {sizes.vision_hidden_size}) in {args.work}")
    print(f"  train: {args.steps} steps of {trl['per_device_train_batch_size']} x "
          f"{trl['gradient_accumulation_steps']} completions ({trl['num_generations']} per prompt, "
          f"{trl['max_completion_length']} tokens), beta {trl['beta']}, learning rate {trl['learning_rate']}, "
          f"{train['device']}, attention {train['attn_implementation']}, launcher `{train['launcher']}`")
    print(f"  data: {args.images} synthetic images per modality; evaluate: "
          f"{args.eval_questions or 'all'} test questions, {params['evaluate']['max_new_tokens']} new tokens")
    for command in ("stages.synthesize", "stages.ingest", "write_checkpoint", "stages.base_model",
                    "stages.launch train", f"{Path(__file__).name} {BARE_TRL}", "evaluate: ours and generate"):
        print(f"  run: {command}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == BARE_TRL:
        print("BARE_TRL_RESULT " + json.dumps(bare_trl(Path(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="med-r1/qwen2-vl-2b-think", help="a recipe under recipes/ (default: "
                        "med-r1/qwen2-vl-2b-think)")
    parser.add_argument("--family", choices=("qwen2-vl", "qwen2.5-vl"), default="qwen2-vl",
                        help="the checkpoint's family (default qwen2-vl)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="qwen2-vl-2b", help="layer sizes")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="train.device and evaluate.device")
    parser.add_argument("--steps", type=int, default=20, help="GRPO optimizer steps, both trainers (default 20)")
    parser.add_argument("--launcher", default="python",
                        help="train.launcher (default python: one process; the recipe's own runs DeepSpeed ZeRO-2 "
                             "on 2 GPUs, e.g. \"accelerate launch --config_file "
                             "infra/accelerate/deepspeed-zero2.yaml --num_processes 2\")")
    parser.add_argument("--images", type=int, default=12,
                        help="synthetic images per modality (x 8 modalities, 5 questions each; default 12)")
    parser.add_argument("--eval-questions", type=int, help="evaluate this many test questions (default: all)")
    parser.add_argument("--max-new-tokens", type=int, help="evaluate.max_new_tokens (default: the recipe's)")
    parser.add_argument("--max-completion-length", type=int,
                        help="train.trl.max_completion_length, both trainers (default: the recipe's; a random model "
                             "never ends its completion, so every step decodes this many tokens)")
    parser.add_argument("--attention", choices=("auto", "sdpa", "flash_attention_2"), default="auto",
                        help="attn_implementation of both trainers and the evaluation (default auto: "
                             "flash_attention_2 on CUDA where flash-attn imports, else sdpa; printed)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the settings and the commands it would run, and run nothing")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medr1-gpu-recipe"),
                        help="the working folder (replaced)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.device == "cuda" and not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            sys.exit("no CUDA GPU is visible: run on a GPU machine, or try the path with --preset smoke --device cpu")

    from medr1.pipeline.recipes import read_recipe

    recipe_attention = read_recipe(args.recipe, REPO / "recipes")["params"].get("train", {}).get(
        "attn_implementation", "auto")
    attention, attention_line = chosen_attention(args, recipe_attention)
    print(f"[gpu_recipe] {attention_line}", flush=True)
    if args.dry_run:
        print_plan(args, attention)
        return
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    for item in ("medr1", "stages", "infra", "recipes", "dvc.yaml"):
        (args.work / item).symlink_to(REPO / item)
    params = work_params(args, attention)
    (args.work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = args.work / "stages.log"
    python = sys.executable
    for stage in ("synthesize", "ingest"):
        run(args.work, log, f"{python} -m stages.{stage}")

    import torch

    from medr1.data.records import read_jsonl
    from medr1.synthetic.checkpoints import write_checkpoint

    records = read_jsonl(args.work / "data/processed/train.jsonl")
    texts = [r.question + " " + " ".join(r.options.values()) for r in records]
    started = time.perf_counter()
    write_checkpoint(args.family, args.work / "checkpoint", texts, sizes=PRESETS[args.preset], device=args.device,
                     dtype=torch.bfloat16)
    built_s = time.perf_counter() - started
    run(args.work, log, f"{python} -m stages.base_model")
    train = params["train"]["trl"]
    per_step = train["per_device_train_batch_size"] * train["gradient_accumulation_steps"]

    output, stage_s = run(args.work, log, f"{python} -m stages.launch train")  # as dvc.yaml runs it
    ours = training_speed(json.loads((args.work / "models/grpo/trainer_log.json").read_text()), args.steps, per_step)
    if memory := re.search(r"peak GPU memory ([\d.]+) GiB allocated", output):
        ours["peak_gib"] = float(memory[1])
    output, _ = run(args.work, log, f"{python} {Path(__file__).resolve()} {BARE_TRL} {args.work}")
    bare = json.loads(output.split("BARE_TRL_RESULT ", 1)[1].splitlines()[0])
    evaluation = evaluation_speed(args.work, args.eval_questions)

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU)"
    rows = [
        ("train: steps/s", ours["steps_per_s"], bare["steps_per_s"]),
        ("train: completions/s", ours["completions_per_s"], bare["completions_per_s"]),
        ("train: trainer runtime, s", ours["runtime_s"], bare["runtime_s"]),
        ("train: peak GPU memory, GiB", ours.get("peak_gib", "-"), bare.get("peak_gib", "-")),
        ("evaluate: questions/s", evaluation["ours"]["questions_per_s"], evaluation["generate"]["questions_per_s"]),
        ("evaluate: peak GPU memory, GiB", evaluation["ours"].get("peak_gib", "-"),
         evaluation["generate"].get("peak_gib", "-")),
    ]
    print(f"\n{args.recipe} on a random {args.family} ({args.preset} sizes, a folder at {args.work / 'checkpoint'}, "
          f"built in {built_s:.0f} s); {args.steps} steps of {per_step} completions "
          f"({train['num_generations']} per prompt, {train['max_completion_length']} tokens); launcher "
          f"`{args.launcher}`; {attention_line}; GPU {gpu}; evaluation on {evaluation['questions']} questions, "
          f"{params['evaluate']['max_new_tokens']} new tokens, grades identical: {evaluation['same_grades']}\n")
    print("| measure | ours (the recipe through the stages) | baseline (TRL's bare GRPOTrainer / plain generate) |")
    print("|---|---|---|")
    for name, mine, theirs in rows:
        print(f"| {name} | {mine} | {theirs} |")
    print(f"\ntrain stage wall clock (load, {args.steps} steps, save): {stage_s:.1f} s; stage logs: {log}")
    if args.json:
        args.json.write_text(json.dumps({"recipe": args.recipe, "family": args.family, "preset": args.preset,
                                         "steps": args.steps, "gpu": gpu, "attention": attention,
                                         "max_completion_length": train["max_completion_length"],
                                         "train": {"ours": ours, "bare_trl": bare},
                                         "evaluate": evaluation, "train_stage_s": round(stage_s, 1)}, indent=1))
    if not evaluation["same_grades"]:
        sys.exit("our decoder and generate graded some question differently: see the stage logs")


if __name__ == "__main__":
    main()
