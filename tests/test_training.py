"""Training entry points on a small tiny model: LoRA merged on save, SFT, checkpoint choice."""

import json

import pytest
from conftest import REPO, repo_params, with_trl, write_untrained_tiny

from medr1.data.records import read_jsonl

PARAMS = repo_params()

FAST = {"max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 4, "logging_steps": 1, "save_steps": 1}


@pytest.fixture(scope="module")
def small_base(tmp_path_factory, processed):
    records = list(read_jsonl(processed / "train.jsonl"))[:8]
    return write_untrained_tiny(tmp_path_factory.mktemp("base"), records), records


def _load(folder):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(folder)


def test_lora_training_saves_one_plain_merged_model(small_base, processed, tmp_path):
    from medr1.task.model_task import recorded_task
    from medr1.train.grpo import train_grpo

    base, records = small_base
    lora = PARAMS.train.lora.model_copy(update={"enabled": True, "r": 4, "alpha": 8})
    params = with_trl(PARAMS.train, **FAST).model_copy(update={"lora": lora})
    history = train_grpo(base, records, processed, params, tmp_path)
    assert any("reward" in entry for entry in history)
    assert not (tmp_path / "adapter_config.json").exists() and not (tmp_path / "training_args.bin").exists()
    trained, original = _load(tmp_path), _load(base)
    assert not any("lora" in name for name, _ in trained.named_parameters())
    assert set(dict(trained.named_parameters())) == set(dict(original.named_parameters()))  # adapters merged away
    assert recorded_task(tmp_path) == {"reasoning": params.reasoning, "prompts": params.prompts,
                                       "rewards": params.rewards}  # how to ask it, without the params at hand


def test_sft_baseline_trains_and_saves_a_loadable_model(small_base, processed, tmp_path):
    from medr1.task.model_task import recorded_task
    from medr1.task.spec import TaskSpec
    from medr1.train.datasets import sft_dataset
    from medr1.train.sft import train_sft

    base, records = small_base
    example = sft_dataset(records[:1], processed, TaskSpec("think_after", "tiny", "train"))[0]
    assert example["completion"][0]["content"].startswith(f"<answer>{records[0].answer}</answer><think>")
    sft = with_trl(PARAMS.sft, max_steps=2, per_device_train_batch_size=4, logging_steps=1)
    history = train_sft(base, records, processed, sft, PARAMS.train.model_copy(update={"reasoning": "think_after"}),
                        tmp_path)
    assert len([entry for entry in history if "loss" in entry]) == 2  # logged at each of the 2 steps
    assert _load(tmp_path).config.model_type == "qwen2_vl"
    assert recorded_task(tmp_path)["reasoning"] == "think_after"


def test_med_r1_sft_trains_with_its_recipe_settings_and_saves_a_loadable_model(small_base, processed, tmp_path):
    import yaml

    from medr1.train.sft import train_sft

    base, records = small_base
    recipe = yaml.safe_load((REPO / "recipes/med-r1/qwen2-vl-2b-think.yaml").read_text())["params"]["sft"]
    trl = {**recipe["trl"], "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "save_strategy": "no"}
    sft = PARAMS.sft.model_validate({**recipe, "trl": trl})
    history = train_sft(base, records, processed, sft, PARAMS.train, tmp_path)
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == len(records) // 2  # one epoch of 2-example steps, a loss logged at each
    rates = [entry["learning_rate"] for entry in history if "learning_rate" in entry]
    # warmup over ceil(0.1 x 4) = 1 step, then cosine from 2e-5: 0.5 (1 + cos(pi k/3)) for k = 0, 1, 2
    assert rates == pytest.approx([0.0, 2e-5, 1.5e-5, 5e-6])
    assert _load(tmp_path).config.model_type == "qwen2_vl"


def test_resume_picks_the_newest_complete_checkpoint(tmp_path):
    from medr1.train.resume import last_checkpoint

    folder = tmp_path / "checkpoints"
    assert last_checkpoint(tmp_path) is None
    for step, state in ((50, "{}"), (100, "{}"), (150, '{"global_st')):  # 150 was cut short by a kill
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
        _whole_weights(folder / f"checkpoint-{step}")
    (folder / "checkpoint-200").mkdir()  # killed before its state was written
    assert last_checkpoint(tmp_path) == str(folder / "checkpoint-100")


def _whole_weights(folder):
    import torch
    from safetensors.torch import save_file

    (folder / "config.json").write_text("{}")
    save_file({"weight": torch.arange(64.0)}, folder / "model.safetensors")
    torch.save({"state": {0: torch.zeros(8)}}, folder / "optimizer.pt")


def test_resume_passes_over_a_checkpoint_whose_weights_or_optimizer_were_cut_short(tmp_path, capsys):
    """trainer_state.json is whole but a file written before it is not (a full disk, a copy cut
    short): resume falls back to the previous complete checkpoint and says why."""
    from medr1.train.resume import last_checkpoint

    folder = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
        _whole_weights(folder / f"checkpoint-{step}")
    weights = folder / "checkpoint-6" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    optimizer = folder / "checkpoint-4" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:200])
    assert last_checkpoint(tmp_path) == str(folder / "checkpoint-2")
    said = capsys.readouterr().out
    assert "passing over checkpoint-6: model.safetensors:" in said and "truncated" in said
    assert "passing over checkpoint-4: optimizer.pt: not a whole torch.save archive" in said
    (folder / "checkpoint-2" / "model.safetensors").unlink()
    assert last_checkpoint(tmp_path) is None and "no weights file" in capsys.readouterr().out


def test_a_local_base_model_with_a_broken_file_is_refused_naming_it(tmp_path):
    import json

    from medr1.errors import MissingFileError
    from medr1.model.base import reference_local_base

    folder = tmp_path / "Qwen2-VL-2B-Instruct"
    folder.mkdir()
    _whole_weights(folder)
    assert reference_local_base(folder, tmp_path / "ref")["kind"] == "local"
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(MissingFileError, match=r"model-00002-of-00002.safetensors: missing \(named by"):
        reference_local_base(folder, tmp_path / "ref")
    (folder / "model.safetensors.index.json").unlink()
    shard = folder / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:20])
    with pytest.raises(MissingFileError, match="model-00001-of-00002.safetensors: header of .* bytes"):
        reference_local_base(folder, tmp_path / "ref")


def test_gpu_only_options_fail_clearly_on_the_cpu(tmp_path):
    from medr1.errors import PipelineError
    from medr1.train.trl_config import grpo_config

    with pytest.raises(PipelineError, match="train.trl.use_vllm needs a CUDA GPU"):
        grpo_config(with_trl(PARAMS.train, use_vllm=True).model_copy(update={"device": "cpu"}), tmp_path)


def test_vllm_generation_without_vllm_is_refused_before_the_model_loads(monkeypatch, tmp_path):
    """On a GPU without vLLM importable, train.trl.use_vllm is refused with the reason, not an ImportError later."""
    import importlib.util

    from medr1.errors import PipelineError
    from medr1.train import trl_config

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    monkeypatch.setattr(trl_config, "resolve_device", lambda device: "cuda")
    with pytest.raises(PipelineError, match="needs vLLM importable .* set train.trl.use_vllm: false"):
        trl_config.grpo_config(with_trl(PARAMS.train, use_vllm=True).model_copy(update={"device": "cuda"}), tmp_path)


def test_the_run_fingerprint_is_json_and_changes_with_params_and_code(processed, monkeypatch, tmp_path):
    from medr1.train.resume import run_fingerprint

    monkeypatch.chdir(REPO)  # the code hashed is the train stage's code deps in dvc.yaml
    split = processed / "train.jsonl"
    fingerprint = run_fingerprint(PARAMS.train, "base-sha", split)
    assert json.loads(json.dumps(fingerprint)) == fingerprint
    assert run_fingerprint(PARAMS.train, "base-sha", split) == fingerprint
    assert run_fingerprint(with_trl(PARAMS.train, learning_rate=0.5), "base-sha", split) != fingerprint
    assert run_fingerprint(PARAMS.train, "other-base", split) != fingerprint
    assert "medr1/train/grpo.py" in fingerprint["code_sha256"] and "stages/train.py" in fingerprint["code_sha256"]


def test_params_reach_grpo_config(tmp_path):
    from medr1.train.trl_config import grpo_config

    knobs = {"num_generations": 4, "temperature": 1.3, "beta": 0.04, "num_iterations": 2, "epsilon": 0.3,
             "max_completion_length": 24, "learning_rate": 0.01, "seed": 5, "gradient_accumulation_steps": 2}
    train = with_trl(PARAMS.train, per_device_train_batch_size=8, **knobs).model_copy(update={"device": "cpu"})
    config = grpo_config(train, tmp_path)
    assert {name: getattr(config, name) for name in knobs} == knobs


def test_the_train_stage_refuses_a_report_to_without_dvclive(tmp_path):
    """dvc.yaml declares the train stage's DVCLive folder as outputs: without dvclive the stage
    would train for nothing and then fail on a missing output; it is refused first."""
    from medr1.errors import PipelineError
    from medr1.train.grpo import train_grpo

    params = with_trl(repo_params().train, report_to=["none"])
    with pytest.raises(PipelineError, match="report_to needs dvclive"):
        train_grpo(tmp_path / "no-model", [], tmp_path, params, tmp_path / "out", log_dir=tmp_path / "logs")


def test_pixel_limits_bound_the_training_processors_resize(small_base):
    from PIL import Image

    from medr1.model.loading import load_for_training

    base, _ = small_base
    image = Image.new("RGB", (392, 392))
    _, own = load_for_training(base, PARAMS.train, 0)
    _, limited = load_for_training(base, PARAMS.train, 0, (3136, 56 * 56))
    own_grid = own.image_processor(images=[image], return_tensors="pt")["image_grid_thw"].tolist()
    limited_grid = limited.image_processor(images=[image], return_tensors="pt")["image_grid_thw"].tolist()
    assert limited_grid == [[1, 4, 4]] and own_grid == [[1, 8, 8]]  # 56x56 and 112x112 pixels in 14-pixel patches


def test_prompts_over_max_prompt_length_are_refused_before_the_model_loads(small_base, processed, tmp_path):
    """Med-R1's trainer cuts a prompt over --max_prompt_length from the left (image tokens too);
    ours refuses it by name before loading any weights: this folder has the processor only."""
    from medr1.errors import PipelineError
    from medr1.model.loading import load_training_processor
    from medr1.train.grpo import train_grpo

    base, records = small_base
    load_training_processor(base).save_pretrained(tmp_path / "processor-only")
    params = with_trl(PARAMS.train, **FAST).model_copy(update={"max_prompt_length": 10})
    over = r"train prompts are longer than train.max_prompt_length 10 tokens"
    with pytest.raises(PipelineError, match=over) as error:
        train_grpo(tmp_path / "processor-only", records, processed, params, tmp_path / "out")
    assert any(record.question_id in str(error.value) for record in records)
    assert "train.max_pixels" in str(error.value)
    roomy = params.model_copy(update={"max_prompt_length": 4096})
    with pytest.raises(PipelineError, match="cannot load a model"):  # past the check, at the weights
        train_grpo(tmp_path / "processor-only", records, processed, roomy, tmp_path / "out")


def test_a_saved_model_without_weights_is_refused_not_published(tmp_path):
    """ZeRO-3 without zero3_save_16bit_model saves only its shards (global_step*/): the stage stops, naming
    the setting, instead of publishing a folder from_pretrained cannot load."""
    import types

    from medr1.errors import PipelineError
    from medr1.task.spec import TaskSpec
    from medr1.train.saving import save_trained

    def shards_only(folder):
        (tmp_path / "global_step1").mkdir()
        (tmp_path / "config.json").write_text("{}")

    trainer = types.SimpleNamespace(save_model=shards_only, state=types.SimpleNamespace(log_history=[]),
                                    accelerator=types.SimpleNamespace(is_main_process=True))
    with pytest.raises(PipelineError, match="no weights file .*zero3_save_16bit_model: true"):
        save_trained(trainer, processor=None, output_dir=tmp_path, task=TaskSpec("no_think", "tiny", "train"))
