"""The distinct-work trainer changes other libraries' objects only while its methods run, and steps
aside for TRL's own trainer where the installed libraries are not the ones it was built for."""

import re

import pytest
from conftest import REPO

from medr1.data.records import read_jsonl


def _replaced_objects(trainer) -> dict:
    """Everything the distinct work replaces, as it stands now."""
    import trl.trainer.utils as trl_utils

    backbone = trainer.model.model
    return {
        "backbone forward": vars(backbone).get("forward"),
        "vision tower hooks": (dict(backbone.visual._forward_pre_hooks), dict(backbone.visual._forward_hooks)),
        "processing class": trainer.processing_class,
        "image processor": trainer.processing_class.image_processor,
        "TRL's LM-head switch": trl_utils._use_triton,
    }


def test_training_leaves_no_replacement_behind(processed, tmp_path):
    """Inside a step the backbone's forward, the tower's hooks, the processor and TRL's LM-head switch are
    replaced; after `train()` each is the object it was before, also after a step that failed."""
    from test_grpo_trainer import _trainer

    from medr1.synthetic.checkpoints import write_checkpoint
    from medr1.train.grpo_trainer import DistinctWorkGRPOTrainer

    records = list(read_jsonl(processed / "train.jsonl"))
    folder = write_checkpoint("qwen2-vl", tmp_path / "model",
                              [r.question + " " + " ".join(r.options.values()) for r in records])
    trainer = _trainer(DistinctWorkGRPOTrainer, folder, records, processed, tmp_path / "out", max_steps=1,
                       per_device_train_batch_size=4, num_generations=2, beta=0.04)
    before = _replaced_objects(trainer)
    during = []
    trainer.model.model.language_model.register_forward_pre_hook(
        lambda *_: during.append(_replaced_objects(trainer)))
    trainer.train()
    assert during, "the language model never ran"
    for name in before:  # each was replaced in some forward, so the comparison below can fail
        assert any(state[name] != before[name] for state in during), f"{name} was never replaced"
    assert _replaced_objects(trainer) == before

    def failing_step(*args, **kwargs):
        raise RuntimeError("a step that failed")

    trainer.model.model.language_model.register_forward_pre_hook(failing_step)
    trainer.args.max_steps = 2
    with pytest.raises(RuntimeError, match="a step that failed"):
        trainer.train()
    assert _replaced_objects(trainer) == before


@pytest.mark.parametrize("library", ["trl", "transformers"])
def test_other_library_versions_train_with_trls_own_trainer(library, monkeypatch, capsys):
    import importlib

    from trl import GRPOTrainer

    from medr1.train.grpo_trainer import DistinctWorkGRPOTrainer, grpo_trainer_class

    assert grpo_trainer_class() is DistinctWorkGRPOTrainer and capsys.readouterr().out == ""
    monkeypatch.setattr(importlib.import_module(library), "__version__", "9.9.9")
    assert grpo_trainer_class() is GRPOTrainer
    notice = capsys.readouterr().out.strip().splitlines()
    assert len(notice) == 1 and f"{library} 9.9.9 is installed" in notice[0].lower()
    assert "TRL's own GRPOTrainer" in notice[0]


def test_a_changed_trl_method_trains_with_trls_own_trainer(monkeypatch, capsys):
    """Same version, other source (a patched or vendored TRL): the trainer steps aside too."""
    from trl import GRPOTrainer

    from medr1.train import grpo_trainer

    monkeypatch.setitem(grpo_trainer.TRL_SOURCES, "_generate", "0" * 64)
    assert grpo_trainer.grpo_trainer_class() is GRPOTrainer
    assert "trl.GRPOTrainer._generate is not the source" in capsys.readouterr().out


def test_pyproject_pins_what_constraints_pin_for_trl_and_transformers():
    from medr1.train.grpo_trainer import TRANSFORMERS_VERSION, TRL_VERSION

    pyproject, constraints = (REPO / "pyproject.toml").read_text(), (REPO / "constraints.txt").read_text()
    for name, version in (("trl", TRL_VERSION), ("transformers", TRANSFORMERS_VERSION)):
        assert re.search(rf'^{name}=={re.escape(version)}$', constraints, re.MULTILINE), name
        assert f'"{name}=={version}"' in pyproject, name


def test_with_gradient_checkpointing_the_reference_is_computed_as_the_policy_is(processed, tmp_path):
    """The policy cannot share prompts under gradient checkpointing (no cache in training), so neither do
    the reference and old-policy passes: at the first step, where reference and policy are equal, their
    log-probabilities are equal to the last bit and the KL term is exactly 0, as in TRL."""
    import torch
    from test_grpo_trainer import _generation_batch, _trainer

    from medr1.synthetic.checkpoints import write_checkpoint
    from medr1.train.grpo_trainer import DistinctWorkGRPOTrainer

    records = list(read_jsonl(processed / "train.jsonl"))
    folder = write_checkpoint("qwen2-vl", tmp_path / "model",
                              [r.question + " " + " ".join(r.options.values()) for r in records])
    trainer = _trainer(DistinctWorkGRPOTrainer, folder, records, processed, tmp_path / "out", beta=0.04,
                       activation_checkpointing=True)
    trainer.model.activation_checkpointing_enable(  # as Trainer.train does
        activation_checkpointing_kwargs=trainer.args.activation_checkpointing_kwargs)
    trainer.model.train()
    batch = trainer._generate_and_score_completions(_generation_batch(trainer, records, images=2))
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    policy, _, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model, ids, mask, batch["completion_ids"].size(1), pixel_values=batch["pixel_values"],
        image_grid_thw=batch["image_grid_thw"], num_images=batch["num_images"],
        mm_token_type_ids=batch.get("mm_token_type_ids"))
    assert torch.equal(policy.detach(), batch["ref_per_token_logps"])
