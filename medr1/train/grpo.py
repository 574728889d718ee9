"""GRPO with Med-R1's rule-based rewards through TRL's GRPOTrainer: config in, trained model out."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from medr1.config import TrainParams
from medr1.data.records import Record
from medr1.errors import PipelineError
from medr1.model.hooks import apply_training_hook
from medr1.model.loading import load_for_training, load_training_processor
from medr1.task.rewards import reward_functions
from medr1.task.spec import training_task
from medr1.train.datasets import grpo_dataset
from medr1.train.loggers import dvclive_callback, split_report_to
from medr1.train.prompt_lengths import refuse_cut_prompts
from medr1.train.resume import last_checkpoint
from medr1.train.saving import save_trained
from medr1.train.trl_config import grpo_config, lora_config


def train_grpo(model_dir: Path, records: list[Record], image_root: Path, params: TrainParams,
               output_dir: Path, log_dir: Path | None = None) -> list[dict]:
    """Train from `model_dir`, save the model and processor to `output_dir`, return the log history;
    with `log_dir` (which needs "dvclive" in train.trl.report_to), DVCLive logs there too.

    A run killed mid-way left checkpoints under `output_dir/checkpoints`; the next call resumes
    from the last one (same optimizer state, RNG and step count) instead of starting over.
    """
    from accelerate.utils import broadcast_object_list

    from medr1.train.checkpoint_pruning import ModelOnlyOlderCheckpoints  # imports transformers
    from medr1.train.grpo_trainer import grpo_trainer_class  # imports TRL
    if log_dir is not None and not split_report_to(params.trl.get("report_to"))[1]:
        raise PipelineError(f"train.trl.report_to needs dvclive: the train stage's logs ({log_dir}) are outputs "
                            "in dvc.yaml; add dvclive beside any other logger, e.g. report_to: [dvclive, wandb]")
    args = grpo_config(params, output_dir / "checkpoints")  # settings that cannot work fail before the model loads
    limits = None if params.max_pixels is None else (params.min_pixels, params.max_pixels)
    longest = refuse_cut_prompts(load_training_processor(model_dir, limits), records, image_root, params.reasoning,
                                 params.prompts, params.max_prompt_length)
    limit = "no limit" if params.max_prompt_length is None else params.max_prompt_length
    print(f"[train] longest prompt {longest} tokens, image tokens included (train.max_prompt_length: {limit})",
          flush=True)
    model, processor = load_for_training(model_dir, params, args.seed, limits)
    if not params.lora.enabled:  # LoRA adapters train as configured, whatever the model
        apply_training_hook(model, processor.tokenizer, records)
    # Beside the checkpoints, which publishing leaves out; one folder per process under a launcher.
    fast_copies = output_dir / "checkpoints" / f"train-images-{socket.gethostname()}-{os.getpid()}"
    fast_copies.mkdir(parents=True, exist_ok=True)
    trainer = grpo_trainer_class()(
        model=model,
        reward_funcs=reward_functions(params.reward_funcs, params.rewards, params.reasoning),
        args=args,
        train_dataset=grpo_dataset(records, image_root, training_task(params), fast_copies),
        processing_class=processor,
        peft_config=lora_config(params) if params.lora.enabled else None,
    )
    trainer.add_callback(ModelOnlyOlderCheckpoints())  # the optimizer state in the newest checkpoint only
    if log_dir is not None:
        trainer.add_callback(dvclive_callback(log_dir))
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
    return save_trained(trainer, processor, output_dir, training_task(params))
