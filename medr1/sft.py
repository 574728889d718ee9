"""The SFT baseline: TRL's SFTTrainer on the same train split, prompts and answer format as GRPO.

Med-R1 compares GRPO with SFT on the same data; here SFT learns from the gold completion
(`<answer>C</answer>` in the run's reasoning layout) where GRPO learns from rewards. On the tiny
wired model both train the same weights (the option words' embeddings, medr1/grpo.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from medr1.config import SftParams, TrainParams
from medr1.grpo import resolve_device, train_option_words_only
from medr1.option_reader import is_wired
from medr1.prompts import chat_prompt, target_completion
from medr1.records import Record


def sft_dataset(records: list[Record], image_root: Path, mode: str):
    """Prompt-completion pairs with their image, as SFTTrainer reads them (loss on the completion only)."""
    from datasets import Dataset, Image

    rows = {
        "prompt": [chat_prompt(r.question, r.options, mode) for r in records],
        "completion": [[{"role": "assistant", "content": target_completion(r.answer, mode)}] for r in records],
        "image": [str(image_root / r.image) for r in records],
    }
    return Dataset.from_dict(rows).cast_column("image", Image())


def train_sft(model_dir: Path, records: list[Record], image_root: Path, params: SftParams, train: TrainParams,
              output_dir: Path) -> list[dict]:
    """Train from `model_dir`, save the model and processor to `output_dir`, return the log history."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(params.seed)
    device = resolve_device(train.device)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    if is_wired(model):
        train_option_words_only(model, processor.tokenizer, records)
    config = SFTConfig(
        output_dir=str(output_dir / "checkpoints"),
        max_steps=params.max_steps,
        learning_rate=params.learning_rate,
        weight_decay=0.0,
        lr_scheduler_type="constant_with_warmup",
        per_device_train_batch_size=params.per_device_train_batch_size,
        logging_steps=params.logging_steps,
        seed=params.seed,
        use_cpu=device == "cpu",
        bf16=device == "cuda",
        report_to="none",
        save_strategy="no",
        max_length=None,  # never cut the image tokens out of a prompt
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=sft_dataset(records, image_root, train.reasoning),
                         processing_class=processor)
    trainer.train()
    trainer.save_model(str(output_dir))
    (output_dir / "training_args.bin").unlink(missing_ok=True)
    processor.save_pretrained(output_dir)
    history = trainer.state.log_history
    (output_dir / "trainer_log.json").write_text(json.dumps(history, indent=1))
    return history
