"""Saving what a trainer trained: the model (sharded weights gathered), its processor and the log."""

from __future__ import annotations

import json
from pathlib import Path

from medr1.errors import PipelineError
from medr1.model.folder_check import broken_files
from medr1.task.model_task import write_model_task
from medr1.task.spec import TaskSpec


def save_trained(trainer, processor, output_dir: Path, task: TaskSpec) -> list[dict]:
    """Save the trained model (gathering sharded weights), processor, log and the task it was trained on
    (medr1_task.json: how to ask it without the params at hand); returns the log."""
    trainer.save_model(str(output_dir))  # writes on the main process only
    history = trainer.state.log_history
    if trainer.accelerator.is_main_process:
        if problems := broken_files(output_dir):  # ZeRO-3 without zero3_save_16bit_model saves shards only
            raise PipelineError(f"the trained model saved to {output_dir} is not a loadable folder "
                                f"({'; '.join(problems)}); under DeepSpeed ZeRO-3 set zero3_save_16bit_model: true in "
                                "the accelerate config (infra/accelerate/deepspeed-zero3.yaml does), so the sharded "
                                "weights are gathered")
        (output_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the params are in the manifest
        processor.save_pretrained(output_dir)
        (output_dir / "trainer_log.json").write_text(json.dumps(history, indent=1))
        write_model_task(output_dir, task)
    return history
