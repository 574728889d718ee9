"""Evaluation speed: our decoding against a loop that generates the way Med-R1's script does.

The reference follows Med-R1's published evaluation (src/eval_vqa): for every batch it builds
the chat messages, opens and processes the batch's images anew, calls the processor with
padding, and generates greedily with max_new_tokens=256 and no stopping criteria of its own
(the model's end-of-turn token still ends a row, as it does there). Ours
(`medr1.evaluate.decoding.generate_completions`) buckets batches by prompt length, computes the prompt up to
the end of an image once for all the questions about it (`medr1.evaluate.heads`), checks the rest of the
answer's format as drafted tokens in one pass (`medr1.evaluate.greedy`), stops each row once its grade is
settled, and processes each image once for all models. Same models, same test
split, same batch size, one run; the extracted answers must be identical.

    .venv/bin/python benchmarks/eval.py                  # after `dvc repro` (models/ and data/processed/)
    .venv/bin/python benchmarks/eval.py --limit 96       # a quicker look
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from medr1.config import load_params
from medr1.data.records import read_jsonl
from medr1.evaluate.decoding import generate_completions
from medr1.model.base import base_model_dir
from medr1.model.encoding import ImageCache
from medr1.model.loading import load_for_evaluation
from medr1.task.rewards import extract_answer_letter
from medr1.task.spec import TaskSpec, evaluation_tasks

DATA = Path("data/processed")


@torch.inference_mode()
def reference_completions(model, processor, records, image_root: Path, task: TaskSpec, batch_size: int) -> list[str]:
    """Med-R1's loop: messages -> chat template -> images opened and processed per batch -> generate(256)."""
    processor.tokenizer.padding_side = "left"
    completions: list[str] = []
    for start in tqdm(range(0, len(records), batch_size), desc="reference", leave=False):
        chunk = records[start : start + batch_size]
        messages = [task.messages(record.question, record.options) for record in chunk]
        text = [processor.apply_chat_template(message, tokenize=False, add_generation_prompt=True)
                for message in messages]
        images = [Image.open(image_root / record.image).convert("RGB") for record in chunk]
        inputs = processor(text=text, images=images, padding=True, return_tensors="pt").to(model.device)
        generated = model.generate(**inputs, use_cache=True, max_new_tokens=256, do_sample=False)
        trimmed = generated[:, inputs["input_ids"].shape[1] :]
        completions.extend(processor.batch_decode(trimmed, skip_special_tokens=True,
                                                  clean_up_tokenization_spaces=False))
    return completions


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="only the first N test questions")
    args = parser.parse_args()
    params = load_params()
    task, batch_size = evaluation_tasks(params)[0], params.evaluate.batch_size
    records = list(read_jsonl(DATA / "test.jsonl"))[: args.limit]
    folders = {"base": base_model_dir(Path("models/base")), "sft": Path("models/sft"), "grpo": Path("models/grpo")}
    loaded = {name: load_for_evaluation(folder, params.evaluate.device) for name, folder in folders.items()}
    print(f"{len(records)} test questions, batch size {batch_size}, reasoning {task.mode}, prompts {task.prompts}, "
          f"{torch.get_num_threads()} threads, device {next(iter(loaded.values()))[0].device}\n")

    def letters(completions):
        return [extract_answer_letter(c, "".join(r.options)) for r, c in zip(records, completions)]

    for model, processor in loaded.values():  # warm both paths up, so neither pays first-call costs in the timing
        reference_completions(model, processor, records[:batch_size], DATA, task, batch_size)
        generate_completions(model, processor, records[:batch_size], DATA, task, batch_size, 256, progress=False)

    rows = []
    for label, names in (("grpo alone", ["grpo"]), ("base + sft + grpo (the evaluate stage)", list(loaded))):
        reference_seconds = ours_seconds = 0.0
        identical = total = 0
        caches: dict[str, ImageCache] = {}  # ours: shared by the models of a run with the same image processor
        for name in names:
            model, processor = loaded[name]
            theirs, seconds = timed(reference_completions, model, processor, records, DATA, task, batch_size)
            reference_seconds += seconds
            cache = caches.setdefault(processor.image_processor.to_json_string(), ImageCache(processor))
            ours, seconds = timed(generate_completions, model, processor, records, DATA, task, batch_size, 256, cache,
                                  progress=False)
            ours_seconds += seconds
            identical += sum(a == b for a, b in zip(letters(theirs), letters(ours)))
            total += len(records)
        questions = len(records) * len(names)
        rows.append((label, questions, reference_seconds, ours_seconds, identical, total))

    print("| models | questions | reference s | reference q/s | ours s | ours q/s | speed-up | identical answers |")
    print("|---|---|---|---|---|---|---|---|")
    for label, questions, reference_seconds, ours_seconds, identical, total in rows:
        print(f"| {label} | {questions} | {reference_seconds:.1f} | {questions / reference_seconds:.1f} | "
              f"{ours_seconds:.1f} | {questions / ours_seconds:.1f} | **{reference_seconds / ours_seconds:.2f}x** | "
              f"{identical}/{total} |")


if __name__ == "__main__":
    main()
