"""Checkpoints that keep the optimizer state in the newest only.

A full checkpoint of a 2B model holds its weights and the optimizer state that resuming needs:
AdamW's two moments (and, under DeepSpeed, fp32 master weights) are several times the weights
(about 30 GB a checkpoint where the weights are 4.4 GB). Med-R1 saved with `--save_only_model`, so
its runs could not resume. Here every checkpoint is saved whole, and once the next one is complete
the older one is cut down to its model: a killed run resumes from the newest, the others stay
loadable models, and the disk holds one optimizer state.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from medr1.train.checkpoint_files import checkpoints_in, cut_to_model, disk_bytes, resume_only_files
from medr1.train.memory_plan import size_text


class ModelOnlyOlderCheckpoints(TrainerCallback):
    """After each save, the checkpoints before the one just saved lose their optimizer state (it is
    complete now: the Trainer calls on_save after writing trainer_state.json, its last file), and
    one line says what each kept checkpoint takes on disk."""

    def on_save(self, args, state, control, **kwargs):
        if not args.should_save:  # the processes the Trainer lets save (and rotate) checkpoints: one per run,
            return                # or one per node with save_on_each_node
        folder = Path(args.output_dir)
        newest = folder / f"checkpoint-{state.global_step}"
        if not newest.is_dir():
            return
        older = [path for path in checkpoints_in(folder) if int(path.name.split("-")[-1]) < state.global_step]
        freed = sum(cut_to_model(path) for path in older)
        size, resume_only = disk_bytes(newest), sum(disk_bytes(path) for path in resume_only_files(newest))
        kept = "" if not older else (f"; {len(older)} older checkpoint(s) keep the model only, "
                                     f"{size_text(sum(map(disk_bytes, older)))} in all ({size_text(freed)} of "
                                     "optimizer state freed now)")
        print(f"[train] {newest.name}: {size_text(size)} on disk (model {size_text(size - resume_only)}, optimizer "
              f"and resume state {size_text(resume_only)}){kept}", flush=True)
