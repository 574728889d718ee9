"""Every shipped `accelerate launch` config loads as accelerate reads it, so none can be broken
unnoticed: ClusterConfig takes each key, DeepSpeed settings are ones DeepSpeedPlugin knows, and the
plugin that `accelerate launch`'s environment builds has the ZeRO stage medr1's launch plan reads."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest

LAUNCH_SETTINGS = {"deepspeed_multinode_launcher", "deepspeed_hostfile", "deepspeed_config_file",
                   "deepspeed_exclusion_filter", "deepspeed_inclusion_filter"}
REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "infra" / "accelerate").glob("*.yaml"))


def planned_zero_stage(path: Path) -> int | None:
    from medr1.train.launch_plan import launch_of

    return launch_of(f"accelerate launch --config_file infra/accelerate/{path.name}", REPO).zero_stage


def test_the_configs_are_there():
    assert {path.stem for path in CONFIGS} >= {"single-gpu", "multi-gpu-ddp", "deepspeed-zero2", "deepspeed-zero3",
                                               "multi-node"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_config_loads_as_accelerate_launch_reads_it(path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin, DistributedType

    config = load_config_from_file(str(path))  # unknown or misspelt keys raise here
    assert config.num_processes >= config.num_machines >= 1
    assert config.machine_rank < config.num_machines
    if config.distributed_type != DistributedType.DEEPSPEED:
        assert not config.deepspeed_config
        return
    # DeepSpeedPlugin's settings, and the ones `accelerate launch` reads for itself
    known = {field.name for field in dataclasses.fields(DeepSpeedPlugin)} | LAUNCH_SETTINGS
    settings = config.deepspeed_config
    assert set(settings) <= known, set(settings) - known
    if config.num_machines > 1:  # else accelerate falls back to pdsh with no hostfile
        assert settings.get("deepspeed_multinode_launcher") == "standard"
    assert planned_zero_stage(path) in (0, 1, 2, 3)  # zero_stage, or the stage of its deepspeed_config_file
    assert {settings.get("offload_optimizer_device", "none"), settings.get("offload_param_device", "none")} <= \
        {"none", "cpu", "nvme"}


@pytest.mark.parametrize("path", [path for path in CONFIGS if "DEEPSPEED" in path.read_text()], ids=lambda p: p.stem)
def test_deepspeed_configs_build_the_plugin(path, monkeypatch):
    """The plugin a worker builds from `accelerate launch`'s environment: accelerate's own refusals run
    (mixed_precision beside a deepspeed_config_file, ...), and its stage is the one memory plans use."""
    # the dev extra brings deepspeed, which installs and runs without CUDA (tests/test_deepspeed_cpu.py)
    assert importlib.util.find_spec("deepspeed") is not None, "deepspeed is missing: `make install` (the dev extra)"
    from accelerate.utils import DeepSpeedPlugin
    from accelerate_launch import launch_environment

    monkeypatch.chdir(REPO)  # a deepspeed_config_file is named from the repository root, where the stages run
    for key, value in launch_environment(path).items():
        monkeypatch.setenv(key, value)
    assert DeepSpeedPlugin().zero_stage == planned_zero_stage(path)
