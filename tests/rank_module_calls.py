"""One rank of tests/test_collective_calls.py, run under torchrun (gloo, CPU): trains nothing, counts.

Each rank builds the train stage's trainer on a Qwen2-VL-shaped folder, generates a batch from its
own rows (the repetition pattern named for its rank), then runs the policy's log-probability pass
(`compute_loss`) and counts the language model's and the vision tower's calls. Under ZeRO-3 each
module call gathers that module's parameters from every rank, so the counts must not depend on
what a rank's micro-batch holds. Writes {rank: counts} to OUT/rank-<rank>.json.

    torchrun --standalone --nproc_per_node 2 tests/rank_module_calls.py FOLDER DATA OUT PATTERN0 PATTERN1

A pattern lists the question each row asks, e.g. 0,0,1,1 (repeated prompts) or 2,3,4,5 (none).
"""

import json
import os
import sys
from pathlib import Path


def main(folder: str, data: str, out: str, *patterns: str) -> None:
    import torch
    from accelerate import PartialState
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig

    from medr1.data.records import read_jsonl
    from medr1.task.rewards import reward_functions
    from medr1.task.spec import TaskSpec
    from medr1.train.datasets import grpo_dataset
    from medr1.train.grpo_trainer import DistinctWorkGRPOTrainer

    rank = int(os.environ["RANK"])
    rows_of_rank = [int(question) for question in patterns[rank].split(",")]
    records = list(read_jsonl(Path(data) / "train.jsonl"))
    by_image = {}
    for record in records:  # one question per picture, so that distinct questions are distinct prompts
        by_image.setdefault(record.image, record)
    records = list(by_image.values())
    config = GRPOConfig(output_dir=str(Path(out) / f"rank-{rank}"), use_cpu=True, report_to="none",
                        save_strategy="no", seed=0, max_steps=1, learning_rate=1e-3, beta=0.0,
                        activation_checkpointing=False,  # as the train stage sets it (TRL's default is on)
                        per_device_train_batch_size=len(rows_of_rank), num_generations=2, max_completion_length=4)
    trainer = DistinctWorkGRPOTrainer(
        model=AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32), args=config,
        processing_class=AutoProcessor.from_pretrained(folder),
        reward_funcs=reward_functions(["accuracy", "format"], "strict", "no_think"),
        train_dataset=grpo_dataset(records, Path(data), TaskSpec("no_think", "tiny", "train")))
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    batch = trainer._generate_and_score_completions([trainer.train_dataset[i] for i in rows_of_rank])
    counts = {"language_model": 0, "visual": 0}
    backbone = trainer.model.model
    for name, module in (("language_model", backbone.language_model), ("visual", backbone.visual)):
        module.register_forward_pre_hook(lambda *_, name=name: counts.__setitem__(name, counts[name] + 1))
    trainer.compute_loss(trainer.model, batch)
    Path(out, f"rank-{rank}.json").write_text(json.dumps(counts))
    # The process group ends here, both ranks done: left to the interpreter's exit, gloo's threads aborted
    # rank 0 in one suite run of five ("terminate called without an active exception", SIGABRT).
    state = PartialState()
    state.wait_for_everyone()
    state.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
