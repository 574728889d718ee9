"""GRPO with Med-R1's rule-based rewards through TRL's GRPOTrainer: config in, trained model out."""

from __future__ import annotations

import json
from pathlib import Path

from medr1.config import TrainParams
from medr1.option_reader import freeze_option_reader, is_wired, mask_gradient
from medr1.prompts import chat_prompt
from medr1.records import LETTERS, Record
from medr1.rewards import accuracy_reward, make_format_reward
from medr1.tiny_model import TAG_TOKENS


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


def train_grpo(model_dir: Path, records: list[Record], image_root: Path, params: TrainParams, output_dir: Path) -> list[dict]:
    """Train from `model_dir`, save the model and processor to `output_dir`, return the log history."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOTrainer

    torch.manual_seed(params.seed)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    if is_wired(model):
        train_option_words_only(model, processor.tokenizer, records)
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
