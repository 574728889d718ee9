"""Every TRL setting in one place: train.trl and sft.trl set any GRPOConfig / SFTConfig field by its TRL
name, our own params declare none of them, and a params.yaml of the earlier layout migrates to the same
configs."""

import dataclasses
import shutil
import typing
import warnings
from pathlib import Path

import pytest

from medr1.config import ParamsError, SftParams, TrainParams, load_params
from medr1.errors import PipelineError
from medr1.params_migration import MOVED
from medr1.pipeline.recipes import apply_recipe
from medr1.train.sft import style_settings
from medr1.train.trl_config import DERIVED, checked_settings, grpo_config, settable_fields, sft_config

REPO = Path(__file__).resolve().parents[1]
OLD_PARAMS = REPO / "tests/fixtures/params-01f3b63.yaml"  # params.yaml as shipped before the settings moved
# fields TRL completes or normalises while it builds the config: what was set is not what it holds
NORMALISED = {"report_to", "accelerator_config", "debug", "pad_to_multiple_of",
              # transformers 5's deprecated aliases of activation_checkpointing*, set by params.yaml: the new name wins
              "gradient_checkpointing", "gradient_checkpointing_kwargs"}


def _another_value(field: dataclasses.Field, annotation):
    """A valid value of the field's type other than its default where one can be made up (numbers, flags);
    the default otherwise (a string or a mapping has no neutral other value)."""
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    kinds = set(typing.get_args(annotation)) or {annotation}
    if isinstance(default, bool) or (default is None and bool in kinds):
        return not default
    if isinstance(default, (int, float)) or (default is None and kinds & {int, float}):
        return (default or 0) + (1 if int in kinds else 0.5)
    return default


def _build(section: TrainParams | SftParams, output: Path):
    if isinstance(section, TrainParams):
        return grpo_config(section, output)
    return sft_config(section, "cpu", output, **style_settings(section.style))


@pytest.mark.parametrize("section_name", ["train", "sft"])
def test_every_trl_field_is_settable_from_params(section_name, tmp_path):
    """Each field of the installed TRL's config (init fields: all of them in TRL 1.16) but those that follow
    from our params is accepted by the pass-through with a value of its type; set alone over params.yaml's,
    it is in the built config, or the config's own checks refuse that value, named as a params error."""
    from trl import GRPOConfig, SFTConfig

    config = GRPOConfig if section_name == "train" else SFTConfig
    params = getattr(load_params(REPO / "params.yaml"), section_name)
    fixed = {**DERIVED[section_name], **(dict.fromkeys(style_settings(params.style)) if section_name == "sft" else {})}
    hints = typing.get_type_hints(config)
    fields = settable_fields(config)
    assert {field.name for field in dataclasses.fields(config) if field.init} == set(fields)
    seen, refused = [], []
    for name, field in fields.items():
        if name in fixed:
            continue
        value = _another_value(field, hints[name])
        assert checked_settings(section_name, config, {name: value}, fixed) == {name: value}, name
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                built = _build(params.model_copy(update={"trl": {**params.trl, name: value}}), tmp_path)
        except PipelineError as refusal:  # e.g. tf32 without an Ampere GPU, a batch num_generations must divide
            assert f"{section_name}.trl" in str(refusal), name
            refused.append(name)
            continue
        # a deprecation, if any, is the library's word on the field set (TRL 1.16 renamed a few), never on ours
        deprecations = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning | FutureWarning)]
        assert all(f"`{name}`" in message for message in deprecations), (name, deprecations)
        if name in NORMALISED:
            continue
        assert getattr(built, name) == value, name
        seen.append(name)
    assert len(seen) > 0.85 * (len(fields) - len(fixed)), (len(seen), refused)  # most reach the config as set
    assert set(fixed) <= set(fields)  # every derived setting is a field of this TRL


@pytest.mark.parametrize("section_name", ["train", "sft"])
def test_a_derived_setting_in_the_pass_through_is_refused_naming_the_param_to_use(section_name, tmp_path):
    from trl import GRPOConfig, SFTConfig

    config = GRPOConfig if section_name == "train" else SFTConfig
    for name, where in DERIVED[section_name].items():
        with pytest.raises(ParamsError) as refusal:
            checked_settings(section_name, config, {name: None}, DERIVED[section_name])
        assert f"{section_name}.trl.{name}: set from {where}, not here" in str(refusal.value)
    with pytest.raises(ParamsError, match=r"train.trl.bf16: set from train.device \(use_cpu on the CPU, bf16 on CUDA"):
        grpo_config(load_params(REPO / "params.yaml").train.model_copy(update={"trl": {"bf16": True}}), tmp_path)


def test_no_setting_is_declared_twice():
    """Our params keep only what TRL has no name for: no field of TrainParams (SftParams) is a GRPOConfig
    (SFTConfig) field, so a setting has one place, its TRL name under train.trl (sft.trl)."""
    from trl import GRPOConfig, SFTConfig

    for ours, theirs in ((TrainParams, GRPOConfig), (SftParams, SFTConfig)):
        twice = (set(ours.model_fields) - {"trl"}) & set(settable_fields(theirs))
        assert twice == set(), f"{ours.__name__} re-declares {theirs.__name__} fields {sorted(twice)}"
    # the migration table moves each old key to a TRL field, under its section's pass-through
    for old, new in MOVED.items():
        if new is not None:
            section, _, name = new.partition(".trl.")
            assert name in settable_fields(GRPOConfig if section == "train" else SFTConfig), new
            assert old.partition(".")[2] not in (TrainParams if section == "train" else SftParams).model_fields


def test_an_old_params_yaml_migrates_naming_each_moved_key_to_the_same_configs(tmp_path):
    """`medr1 recipe apply` on params.yaml as an earlier version shipped it: each moved key named, and the
    GRPOConfig and SFTConfig built from the result are the ones today's params.yaml builds, field by field."""
    old = tmp_path / "params.yaml"
    shutil.copy(OLD_PARAMS, old)
    with pytest.raises(ParamsError, match="medr1 recipe apply embedded-cpu"):
        load_params(old)
    applied = apply_recipe("embedded-cpu", old, REPO / "recipes")
    assert "train.learning_rate -> train.trl.learning_rate" in applied.moved
    assert "train.checkpoint_steps -> train.trl.save_steps" in applied.moved
    assert "sft.max_steps -> sft.trl.max_steps" in applied.moved
    assert any(line.startswith("study.gpus removed: placement is now one Prefect worker per GPU")
               for line in applied.moved)
    assert len(applied.moved) == len(MOVED)  # every key moved
    # the values the recipe's, but for SFT's activation_checkpointing: TRL's default (its old name), now said explicitly
    assert applied.changed.keys() == {"sft.trl"}
    before, after = applied.changed["sft.trl"]
    assert {**before, "activation_checkpointing": True} == after
    migrated, shipped = load_params(old), load_params(REPO / "params.yaml")
    assert migrated.model_dump() == shipped.model_dump()
    out = tmp_path / "out"
    assert grpo_config(migrated.train, out).to_dict() == grpo_config(shipped.train, out).to_dict()
    assert (sft_config(migrated.sft, "cpu", out, **style_settings(migrated.sft.style)).to_dict()
            == sft_config(shipped.sft, "cpu", out, **style_settings(shipped.sft.style)).to_dict())
    assert "# a resumable checkpoint" not in old.read_text()  # the old file's own comments went along, not ours
    assert "# a killed run resumes from its last checkpoint" in old.read_text()


def test_a_key_set_at_both_places_is_refused_and_nothing_written(tmp_path):
    old = tmp_path / "params.yaml"
    text = OLD_PARAMS.read_text().replace("    weight_decay: 0.0", "    learning_rate: 0.5\n    weight_decay: 0.0", 1)
    old.write_text(text)
    with pytest.raises(ParamsError, match="train.learning_rate and train.trl.learning_rate are both set"):
        apply_recipe("embedded-cpu", old, REPO / "recipes")
    assert old.read_text() == text
