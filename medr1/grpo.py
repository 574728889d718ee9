"""GRPO with Med-R1's rule-based rewards through TRL's GRPOTrainer: config in, trained model out."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

from medr1.config import TrainParams
from medr1.errors import PipelineError
from medr1.option_reader import freeze_option_reader, is_wired, mask_gradient
from medr1.prompts import chat_prompt
from medr1.records import LETTERS, Record
from medr1.rewards import accuracy_reward, make_format_reward
from medr1.tiny_model import TAG_TOKENS
from medr1.training import load_for_training, resolve_device, save_trained


def grpo_dataset(records: list[Record], image_root: Path, mode: str, fast_copies: Path | None = None):
    """Conversational prompts with their image and gold letter, as GRPOTrainer reads them.

    The trainer decodes a row's image each time it samples the row, num_generations times a
    step. With `fast_copies`, a folder, and a split whose distinct images take at most 1 GiB as
    raw pixels, the images are read from uncompressed TIFF copies written there: the same pixels,
    decoded about 6x faster than the PNGs.
    """
    from datasets import Dataset, Image

    paths = [str(image_root / r.image) for r in records]
    if fast_copies is not None:
        paths = _uncompressed_copies(paths, fast_copies)
    rows = {
        "prompt": [chat_prompt(r.question, r.options, mode) for r in records],
        "image": paths,
        "answer": [r.answer for r in records],
        "letters": ["".join(r.options) for r in records],
    }
    dataset = Dataset.from_dict(rows)
    return dataset.cast_column("image", Image())


def _uncompressed_copies(paths: list[str], folder: Path, budget: int = 1 << 30) -> list[str]:
    """The paths of uncompressed TIFF copies of `paths` in `folder`, or `paths` itself when the
    distinct images would take more than `budget` bytes."""
    from PIL import Image

    distinct = list(dict.fromkeys(paths))
    if sum(_raw_rgb_bytes(path) for path in distinct) > budget:  # headers only: opening does not decode
        return paths
    copies = {}
    for index, path in enumerate(distinct):
        copies[path] = str(folder / f"{index}.tiff")
        with Image.open(path) as image:
            image.convert("RGB").save(copies[path], format="TIFF")  # no compression: decoding is a copy
    return [copies[path] for path in paths]


def _raw_rgb_bytes(path: str) -> int:
    from PIL import Image

    with Image.open(path) as image:
        return image.width * image.height * 3


def grpo_config(params: TrainParams, output_dir: Path):
    from trl import GRPOConfig

    device = resolve_device(params.device)
    if params.use_vllm and device != "cuda":
        raise PipelineError("train.use_vllm needs a CUDA GPU; set train.use_vllm: false on the CPU")
    return GRPOConfig(
        output_dir=str(output_dir),
        max_steps=params.max_steps,
        learning_rate=params.learning_rate,
        weight_decay=0.0,  # the tiny model's frozen option reader must not decay
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=0,
        per_device_train_batch_size=params.per_device_train_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        num_generations=params.num_generations,
        temperature=params.temperature,
        beta=params.beta,
        num_iterations=params.num_iterations,
        epsilon=params.epsilon,
        max_completion_length=params.max_completion_length,
        reward_weights=[params.format_weight, params.accuracy_weight],
        logging_steps=params.logging_steps,
        seed=params.seed,
        use_cpu=device == "cpu",
        bf16=device == "cuda",
        gradient_checkpointing=params.gradient_checkpointing,
        use_vllm=params.use_vllm,
        vllm_mode=params.vllm_mode,
        report_to="none",
        save_strategy="steps",  # checkpoints make a killed run resumable (`train_grpo` picks up the last one)
        save_steps=params.checkpoint_steps,
        save_total_limit=2,
        disable_tqdm=False,
    )


def lora_config(params: TrainParams):
    from peft import LoraConfig

    lora = params.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def option_word_ids(tokenizer, records: list[Record]) -> list[int]:
    """Token ids of the options' texts ("CT", "Grade", ...), without letters and special tokens."""
    excluded = set(tokenizer.all_special_ids) | set(tokenizer.convert_tokens_to_ids(list(LETTERS)))
    excluded |= set(tokenizer.convert_tokens_to_ids(list(TAG_TOKENS)))
    texts = sorted({text for record in records for text in record.options.values()})
    ids = {i for text in texts for i in tokenizer(" " + text, add_special_tokens=False)["input_ids"]}
    return sorted(ids - excluded)


def train_option_words_only(model, tokenizer, records: list[Record]) -> None:
    """On the tiny wired model GRPO learns what the option words mean, nothing else.

    The option reader, the answer format and the eyes stay as the base stage left them; only
    the input embeddings of the words that options are made of train. The output embeddings
    are untied into a frozen copy first, so that moving a word's meaning never changes how
    likely the model is to *say* it (a tied, growing "Liver" row would outbid `<|im_end|>`).
    """
    import torch

    freeze_option_reader(model)
    model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    model.config.tie_word_embeddings = False
    model.config.get_text_config().tie_word_embeddings = False
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    embeddings = model.get_input_embeddings().weight
    embeddings.requires_grad_(True)
    rows = torch.zeros_like(embeddings)
    rows[option_word_ids(tokenizer, records)] = 1.0
    mask_gradient(embeddings, rows)


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest complete checkpoint: the Trainer writes trainer_state.json last, so a
    checkpoint that a kill cut short has none (or a truncated one) and is passed over."""
    folder = output_dir / "checkpoints"
    found = [(int(path.name.split("-")[-1]), path) for path in folder.glob("checkpoint-*") if path.name.split("-")[-1].isdigit()]
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return str(path)
    return None


def train_grpo(model_dir: Path, records: list[Record], image_root: Path, params: TrainParams, output_dir: Path) -> list[dict]:
    """Train from `model_dir`, save the model and processor to `output_dir`, return the log history.

    A run killed mid-way left checkpoints under `output_dir/checkpoints`; the next call resumes
    from the last one (same optimizer state, RNG and step count) instead of starting over.
    """
    from accelerate.utils import broadcast_object_list
    from trl import GRPOTrainer

    model, processor = load_for_training(model_dir, params)
    if is_wired(model) and not params.lora.enabled:
        train_option_words_only(model, processor.tokenizer, records)
    # Beside the checkpoints, which publishing leaves out; one folder per process under a launcher.
    fast_copies = output_dir / "checkpoints" / f"train-images-{socket.gethostname()}-{os.getpid()}"
    fast_copies.mkdir(parents=True, exist_ok=True)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[make_format_reward(params.reasoning), accuracy_reward],
        args=grpo_config(params, output_dir / "checkpoints"),
        train_dataset=grpo_dataset(records, image_root, params.reasoning, fast_copies),
        processing_class=processor,
        peft_config=lora_config(params) if params.lora.enabled else None,
    )
    if params.lora.enabled and trainer.is_deepspeed_enabled:
        raise PipelineError("train.lora with DeepSpeed is not supported yet (the merged model cannot be gathered "
                            "from ZeRO shards); use a DDP or single-GPU launcher, or train.lora.enabled: false")
    # Every process resumes from the checkpoint the main process chose.
    chosen = [last_checkpoint(output_dir) if trainer.accelerator.is_main_process else None]
    resume = broadcast_object_list(chosen)[0] if trainer.accelerator.num_processes > 1 else chosen[0]
    if resume and trainer.accelerator.is_main_process:
        print(f"[train] resuming from {resume}", flush=True)
    try:
        trainer.train(resume_from_checkpoint=resume)
    finally:
        shutil.rmtree(fast_copies, ignore_errors=True)
    if params.lora.enabled:  # one plain checkpoint, loadable without peft
        trainer.model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    return save_trained(trainer, processor, output_dir)
