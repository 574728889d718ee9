"""The SFT baseline: TRL's SFTTrainer on the same train split, prompts and answer format as GRPO.

Med-R1 compares GRPO with SFT on the same data; here SFT learns from the gold completion
(`<answer>C</answer>` in the run's reasoning layout) where GRPO learns from rewards. On the tiny
wired model both train the same weights (the option words' embeddings, medr1/tiny/training.py).
"""

from __future__ import annotations

from pathlib import Path

from medr1.config import SftParams, TrainParams
from medr1.data.records import Record
from medr1.model.hooks import apply_training_hook
from medr1.model.loading import load_for_training, resolve_device
from medr1.train.datasets import sft_dataset
from medr1.train.saving import save_trained


def train_sft(model_dir: Path, records: list[Record], image_root: Path, params: SftParams, train: TrainParams,
              output_dir: Path) -> list[dict]:
    """Train from `model_dir`, save the model and processor to `output_dir`, return the log history."""
    from trl import SFTConfig, SFTTrainer

    device = resolve_device(train.device)
    model, processor = load_for_training(model_dir, train.model_copy(update={"seed": params.seed}))
    apply_training_hook(model, processor.tokenizer, records)
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
    dataset = sft_dataset(records, image_root, train.reasoning, train.prompts)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=processor)
    trainer.train()
    return save_trained(trainer, processor, output_dir)
