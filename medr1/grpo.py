"""GRPO with Med-R1's rule-based rewards through TRL's GRPOTrainer: config in, trained model out."""

from __future__ import annotations

import json
from pathlib import Path

from medr1.config import TrainParams
from medr1.option_reader import freeze_option_reader, is_wired
from medr1.prompts import chat_prompt
from medr1.records import Record
from medr1.rewards import accuracy_reward, make_format_reward


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA GPU is visible; set train.device: cpu or auto")
    return device


def grpo_dataset(records: list[Record], image_root: Path, mode: str):
    """Conversational prompts with their image and gold letter, as GRPOTrainer reads them."""
    from datasets import Dataset, Image

    rows = {
        "prompt": [chat_prompt(r.question, r.options, mode) for r in records],
        "image": [str(image_root / r.image) for r in records],
        "answer": [r.answer for r in records],
        "letters": ["".join(r.options) for r in records],
    }
    dataset = Dataset.from_dict(rows)
    return dataset.cast_column("image", Image())


def grpo_config(params: TrainParams, output_dir: Path):
    from trl import GRPOConfig

    device = resolve_device(params.device)
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
        max_completion_length=params.max_completion_length,
        reward_weights=[params.format_weight, params.accuracy_weight],
        logging_steps=params.logging_steps,
        seed=params.seed,
        use_cpu=device == "cpu",
        bf16=device == "cuda",
        report_to="none",
        save_strategy="no",
        disable_tqdm=False,
    )


def train_grpo(model_dir: Path, records: list[Record], image_root: Path, params: TrainParams, output_dir: Path) -> list[dict]:
    """Train from `model_dir`, save the model and processor to `output_dir`, return the log history."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOTrainer

    torch.manual_seed(params.seed)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    if is_wired(model):
        # The tiny model's reader and language model stay as the warm-up left them: GRPO
        # learns what the medical words mean (their embeddings), the way the option reader
        # compares them with pictures.
        freeze_option_reader(model)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_("embed_tokens" in name)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[make_format_reward(params.reasoning), accuracy_reward],
        args=grpo_config(params, output_dir / "checkpoints"),
        train_dataset=grpo_dataset(records, image_root, params.reasoning),
        processing_class=processor,
    )
    trainer.train()
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    history = trainer.state.log_history
    (output_dir / "trainer_log.json").write_text(json.dumps(history, indent=1))
    return history
