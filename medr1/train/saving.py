"""Saving what a trainer trained: the model (sharded weights gathered), its processor and the log."""

from __future__ import annotations

import json
from pathlib import Path


def save_trained(trainer, processor, output_dir: Path) -> list[dict]:
    """Save the trained model (gathering sharded weights), processor and log; returns the log."""
    trainer.save_model(str(output_dir))  # writes on the main process only
    history = trainer.state.log_history
    if trainer.accelerator.is_main_process:
        (output_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the params are in the manifest
        processor.save_pretrained(output_dir)
        (output_dir / "trainer_log.json").write_text(json.dumps(history, indent=1))
    return history
