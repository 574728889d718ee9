"""The path users take with a downloaded checkpoint: `base_model.kind: local` at a Qwen2-VL or
Qwen2.5-VL folder (medr1/synthetic/checkpoints.py: real tokenizer scheme, chat template, generation
config), the `med-r1` recipe with its steps scaled down to the CPU, `dvc repro` through register."""

import json

import pytest
import yaml
from conftest import run

from medr1.data.records import read_jsonl

pytestmark = pytest.mark.slow


def _scaled_down(params: dict, before: dict, folder, lora: bool) -> dict:
    """The recipe's params on this machine: the run's own data stages (no OmniMedVQA images here),
    the local folder, the CPU, two steps of each trainer, short completions."""
    params["ingest"], params["validate"] = before["ingest"], before["validate"]
    params["base_model"].update(kind="local", path=str(folder))
    params["train"].update(device="cpu", launcher="python")  # attn_implementation: the recipe's auto
    params["train"]["trl"].update(max_steps=2, save_steps=2, per_device_train_batch_size=4,
                                  gradient_accumulation_steps=1, num_generations=2, max_completion_length=16)
    params["train"]["lora"] = {**before["train"]["lora"], "enabled": lora}
    params["sft"].update(launcher=None)  # null: train.launcher
    params["sft"]["trl"].update(max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                                save_strategy="no")
    params["evaluate"].update(device="cpu", max_new_tokens=16)
    return params


@pytest.mark.parametrize("family, recipe, lora", [
    ("qwen2-vl", "med-r1/qwen2-vl-2b-think", False),
    ("qwen2.5-vl", "med-r1/qwen2.5-vl-3b-think", True),
])
def test_a_downloaded_checkpoint_runs_the_med_r1_recipe_through_register(pipeline_copy, tmp_path, family, recipe,
                                                                          lora):
    from medr1.pipeline.hashing import folder_digest, folder_hashes
    from medr1.synthetic.checkpoints import write_checkpoint

    repo = pipeline_copy
    records = list(read_jsonl(repo / "data/processed/train.jsonl"))
    folder = write_checkpoint(family, tmp_path / family, [r.question + " " + " ".join(r.options.values())
                                                          for r in records]).resolve()
    before = yaml.safe_load((repo / "params.yaml").read_text())
    run(["medr1", "recipe", "apply", recipe], repo)
    params = _scaled_down(yaml.safe_load((repo / "params.yaml").read_text()), before, folder, lora)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    repro = run(["dvc", "repro", "register"], repo)

    # the recipe's attention (auto) on a machine without flash-attn: sdpa, and the log says why
    assert "sdpa attention (train.attn_implementation: auto, and flash-attention runs on CUDA GPUs only" in repro.stdout
    assert repro.stdout.count("[train] plan: one process (python)") == 1

    version = json.loads((repo / "metrics/registered.json").read_text())["version"]
    audit = json.loads(run(["medr1", "audit", "model", version, "--json"], repo).stdout)
    assert audit["base_model"] == {"kind": "local", "path": str(folder),
                                   "sha256": folder_digest(folder_hashes(folder))}
    assert audit["recipe"]["name"] == recipe and audit["params"]["train"]["prompts"] == "med-r1"
    assert {"train.trl", "base_model.path", "train.device"} <= set(audit["recipe"]["changed"])
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    tested = sum(1 for _ in read_jsonl(repo / "data/processed/test.jsonl"))
    assert metrics["count"] == metrics["base_count"] == metrics["sft_count"] == tested
    config = json.loads((repo / "models/grpo/config.json").read_text())
    assert config["model_type"] == family.replace("-", "_").replace(".", "_")
    assert not (repo / "models/grpo/adapter_config.json").exists()  # LoRA merged into a plain model
