import re
from pathlib import Path

import pytest
import yaml

from medr1.config import ParamsError, load_params

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_load():
    params = load_params(REPO / "params.yaml")
    assert params.train.reasoning in ("think_before", "no_think", "think_after")
    assert params.validate_.min_rows_per_modality >= 1


def test_unknown_key_is_named(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["learning_rat"] = 0.1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"train\.learning_rat"):
        load_params(tmp_path / "params.yaml")


def test_ill_typed_key_is_named(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["min_pixels"] = "many"
    raw["ingest"]["test_fraction"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as error:
        load_params(tmp_path / "params.yaml")
    assert "train.min_pixels" in str(error.value) and "ingest.test_fraction" in str(error.value)


def test_zero_study_steps_are_refused(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["study"]["max_steps"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="study.max_steps: .*0 steps trains nothing"):
        load_params(tmp_path / "params.yaml")


def test_a_params_yaml_of_the_earlier_layout_is_refused_naming_each_moved_key_and_the_command():
    """tests/fixtures/params-01f3b63.yaml: params.yaml as shipped before the TRL settings moved to train.trl."""
    with pytest.raises(ParamsError) as error:
        load_params(REPO / "tests/fixtures/params-01f3b63.yaml")
    message = str(error.value)
    assert "train.learning_rate -> train.trl.learning_rate" in message
    assert "train.checkpoint_steps -> train.trl.save_steps" in message
    assert "sft.seed -> sft.trl.seed" in message
    assert "study.gpus removed: placement is now one Prefect worker per GPU" in message
    assert "medr1 recipe apply embedded-cpu --params" in message
    assert message.count(" -> ") == 22  # every moved key, none twice; nothing else (no pydantic complaint)


def test_pixel_limits_out_of_order_are_named(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update(max_pixels=3000, min_pixels=3136)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="train.min_pixels 3136 is above train.max_pixels 3000"):
        load_params(tmp_path / "params.yaml")


def test_a_key_missing_from_params_yaml_is_named_not_defaulted(tmp_path):
    """params.yaml is the one source of every value: the types carry no second set of defaults."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["train"]["min_pixels"]
    del raw["register"]["gates"]["production"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as error:
        load_params(tmp_path / "params.yaml")
    assert "train.min_pixels: Field required" in str(error.value)
    assert "register.gates.production: Field required" in str(error.value)


def test_the_typed_config_has_no_defaults():
    """Only the tiny model's own settings may be left out, where no tiny model is built (kind: local)."""
    from typing import get_args

    from pydantic import BaseModel

    from medr1.config import Params

    def sections(model: type[BaseModel]):
        yield model
        for field in model.model_fields.values():
            for kind in (field.annotation, *get_args(field.annotation)):  # TinyArchitecture | None too
                if isinstance(kind, type) and issubclass(kind, BaseModel):
                    yield from sections(kind)

    defaulted = [f"{model.__name__}.{name}" for model in sections(Params)
                 for name, field in model.model_fields.items() if not field.is_required()]
    assert defaulted == ["BaseModelParams.seed", "BaseModelParams.architecture", "BaseModelParams.warmup"]
    assert all(Params.model_fields["base_model"].annotation.model_fields[name].default is None
               for name in ("seed", "architecture", "warmup"))


def test_a_local_checkpoint_needs_none_of_the_tiny_models_settings(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    architecture = raw["base_model"]["architecture"]
    raw["base_model"] = {"kind": "local", "path": "/models/Qwen2-VL-2B-Instruct"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert load_params(tmp_path / "params.yaml").base_model.architecture is None
    raw["base_model"] = {"kind": "tiny", "path": None, "seed": 0, "architecture": architecture}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"base_model.kind: tiny builds the tiny model here and needs "
                                          r"base_model.warmup \(") as error:
        load_params(tmp_path / "params.yaml")
    assert "base_model.architecture" not in str(error.value)  # only what is missing is named


@pytest.mark.parametrize("changes, named", [
    ({"train": {"trl": {"reward_weights": [1.0]}}}, "trl.reward_weights has 1 entries for 2 reward_funcs"),
    ({"train": {"reward_funcs": ["format", "acuracy"]}}, "train.reward_funcs"),
    ({"evaluate": {"base_prompt": "zero_shot"}}, "train.prompts: med-r1"),
    ({"evaluate": {"protocol": "lenient"}}, "evaluate.protocol"),
])
def test_inconsistent_task_settings_are_refused_naming_what_to_change(tmp_path, changes, named):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in changes.items():
        raw[section].update(values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=re.escape(named)):
        load_params(tmp_path / "params.yaml")
    raw["train"]["prompts"] = "med-r1"  # with Med-R1's prompts, its zero-shot base prompt is accepted
    raw["evaluate"] = {**raw["evaluate"], "base_prompt": "zero_shot", "protocol": "med-r1"}
    raw["train"]["reward_funcs"], raw["train"]["trl"]["reward_weights"] = ["accuracy", "format"], [1.0, 1.0]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert load_params(tmp_path / "params.yaml").evaluate.base_prompt == "zero_shot"


def test_unknown_is_no_study_group(tmp_path):
    """`unknown` counts the Med-R1 split records the other family's files do not label: a record may
    carry it, a study may not train or test on it."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["study"]["modalities"] = ["CT", "unknown"]
    raw["study"]["question_types"] = ["unknown"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as error:
        load_params(tmp_path / "params.yaml")
    message = str(error.value)
    assert "study.modalities" in message and "study.question_types" in message
    assert "'unknown' is not a modality to train or test on" in message
