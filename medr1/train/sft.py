"""The SFT baseline: TRL's SFTTrainer on the same train split as GRPO, in one of two styles.

- `completion_only` (ours): the run's prompt and answer format; SFT learns the gold completion
  (`<answer>C</answer>` in the run's reasoning layout) where GRPO learns from rewards. On the tiny
  wired model both train the same weights (the option words' embeddings, medr1/tiny/training.py).
- `med-r1`: Med-R1's `sft.py`, its examples, batches and loss (medr1/train/published_sft.py).
"""

from __future__ import annotations

from pathlib import Path

from medr1.config import SftParams, TrainParams
from medr1.data.records import Record
from medr1.model.hooks import apply_training_hook
from medr1.model.loading import load_for_training, resolve_device
from medr1.task.spec import training_task
from medr1.train.datasets import sft_dataset
from medr1.train.lm_head import completion_positions_scored
from medr1.train.published_sft import PublishedSftCollator, published_sft_dataset
from medr1.train.saving import save_trained
from medr1.train.trl_config import sft_config, style_settings


def train_sft(model_dir: Path, records: list[Record], image_root: Path, params: SftParams, train: TrainParams,
              output_dir: Path) -> list[dict]:
    """Train from `model_dir`, save the model and processor to `output_dir`, return the log history."""
    from trl import SFTTrainer

    device = resolve_device(train.device)
    config = sft_config(params, device, output_dir / "checkpoints", **style_settings(params.style))
    model, processor = load_for_training(model_dir, train, config.seed)
    apply_training_hook(model, processor.tokenizer, records)
    if params.style == "med-r1":  # sft.py's processing class is the tokenizer, which TRL 1.x refuses beside images
        trainer = SFTTrainer(model=model, args=config, train_dataset=published_sft_dataset(records, image_root),
                             processing_class=processor, data_collator=PublishedSftCollator(processor))
    else:
        dataset = sft_dataset(records, image_root, training_task(train))
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=processor)
    with completion_positions_scored():  # the positions the labels leave unmasked
        trainer.train()
    return save_trained(trainer, processor, output_dir, training_task(train))
