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
    raw["train"]["max_steps"] = "many"
    raw["ingest"]["test_fraction"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as error:
        load_params(tmp_path / "params.yaml")
    assert "train.max_steps" in str(error.value) and "ingest.test_fraction" in str(error.value)
