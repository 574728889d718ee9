"""Checkpoints keep the optimizer state in the newest only (Med-R1's --save_only_model for the
others), and a run resumes only from a checkpoint that kept it."""

from types import SimpleNamespace

import pytest
from conftest import repo_params, with_trl, write_untrained_tiny

from medr1.data.records import read_jsonl

RESUME_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "rng_state_1.pth")


def _checkpoint(folder, step: int, deepspeed: bool = False):
    """A whole checkpoint as the Trainer writes it: model, resume state, trainer_state.json last."""
    import torch
    from safetensors.torch import save_file

    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    save_file({"weight": torch.arange(64.0)}, checkpoint / "model.safetensors")
    for name in RESUME_FILES:
        torch.save({"state": torch.zeros(256)}, checkpoint / name)
    if deepspeed:  # ZeRO shards of the optimizer and master weights, and the tag that names them
        shards = checkpoint / f"global_step{step}"
        shards.mkdir()
        torch.save({"shard": torch.zeros(512)}, shards / "bf16_zero_pp_rank_0_optim_states.pt")
        (checkpoint / "latest").write_text(f"global_step{step}")
    (checkpoint / "trainer_state.json").write_text("{}")
    return checkpoint


def _on_save(folder, step: int, should_save: bool = True):
    from medr1.train.checkpoint_pruning import ModelOnlyOlderCheckpoints

    ModelOnlyOlderCheckpoints().on_save(SimpleNamespace(output_dir=str(folder), should_save=should_save),
                                        SimpleNamespace(global_step=step), None)


def test_after_a_save_the_older_checkpoints_keep_their_model_only(tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    _checkpoint(folder, 100, deepspeed=True)
    _checkpoint(folder, 200)
    _on_save(folder, 200)
    older, newest = folder / "checkpoint-100", folder / "checkpoint-200"
    assert sorted(path.name for path in older.iterdir()) == ["config.json", "model.safetensors", "trainer_state.json"]
    assert all((newest / name).is_file() for name in RESUME_FILES)
    said = capsys.readouterr().out
    assert said.startswith("[train] checkpoint-200: ") and "on disk (model " in said
    assert "1 older checkpoint(s) keep the model only" in said and "of optimizer state freed now" in said

    _checkpoint(folder, 300)
    _on_save(folder, 300, should_save=False)  # a process the Trainer does not let save touches nothing
    assert (newest / "optimizer.pt").is_file() and capsys.readouterr().out == ""
    _on_save(folder, 300)
    assert not (newest / "optimizer.pt").exists() and (folder / "checkpoint-300" / "optimizer.pt").is_file()


def test_a_checkpoint_whose_weights_are_only_in_its_shards_is_left_whole(tmp_path):
    """ZeRO-3 without zero3_save_16bit_model writes no model file: its global_step shards are the only copy of
    the weights, so cutting them would leave nothing to load."""
    folder = tmp_path / "checkpoints"
    (_checkpoint(folder, 100, deepspeed=True) / "model.safetensors").unlink()
    _checkpoint(folder, 200, deepspeed=True)
    _on_save(folder, 200)
    assert (folder / "checkpoint-100" / "global_step100").is_dir()
    assert (folder / "checkpoint-100" / "optimizer.pt").is_file()


def test_resume_passes_over_checkpoints_that_keep_their_model_only(tmp_path, capsys):
    from medr1.train.resume import last_checkpoint

    folder = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        _checkpoint(folder, step)
        _on_save(folder, step)
    assert last_checkpoint(tmp_path) == str(folder / "checkpoint-3")
    optimizer = folder / "checkpoint-3" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])  # the newest cut short by a full disk
    capsys.readouterr()
    assert last_checkpoint(tmp_path) is None  # the others cannot resume: the run starts over, saying why
    said = capsys.readouterr().out
    assert "passing over checkpoint-3: optimizer.pt: not a whole torch.save archive" in said
    assert "passing over checkpoint-2: it keeps the model only, no optimizer state to resume" in said


def test_a_training_run_leaves_the_optimizer_state_in_its_newest_checkpoint(processed, tmp_path_factory):
    """The callback inside the Trainer: two steps, a checkpoint after each."""
    from medr1.train.checkpoint_files import holds_optimizer_state
    from medr1.train.grpo import train_grpo
    from medr1.train.resume import last_checkpoint

    records = list(read_jsonl(processed / "train.jsonl"))[:8]
    base = write_untrained_tiny(tmp_path_factory.mktemp("base"), records)
    params = with_trl(repo_params().train, max_steps=2, save_steps=1, logging_steps=1, per_device_train_batch_size=4,
                      num_generations=4)
    out = tmp_path_factory.mktemp("out")
    train_grpo(base, records, processed, params, out)
    first, second = out / "checkpoints/checkpoint-1", out / "checkpoints/checkpoint-2"
    assert not holds_optimizer_state(first) and (first / "model.safetensors").is_file()
    assert holds_optimizer_state(second) and last_checkpoint(out) == str(second)


def test_save_only_model_is_the_pipelines_to_set(tmp_path):
    from medr1.errors import PipelineError
    from medr1.train.trl_config import grpo_config

    train = with_trl(repo_params().train, save_only_model=True)
    with pytest.raises(PipelineError, match="train.trl.save_only_model: set from fixed at false: the newest checkpoint "
                                            "keeps"):
        grpo_config(train, tmp_path)
