"""Every shipped `accelerate launch` config loads as accelerate reads it, so none can be broken
unnoticed: ClusterConfig takes each key, and DeepSpeed settings are ones DeepSpeedPlugin knows."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest

LAUNCH_SETTINGS = {"deepspeed_multinode_launcher", "deepspeed_hostfile", "deepspeed_config_file",
                   "deepspeed_exclusion_filter", "deepspeed_inclusion_filter"}
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "infra" / "accelerate").glob("*.yaml"))


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
    assert settings["zero_stage"] in (0, 1, 2, 3)
    assert {settings.get("offload_optimizer_device", "none"), settings.get("offload_param_device", "none")} <= \
        {"none", "cpu", "nvme"}


@pytest.mark.parametrize("path", [path for path in CONFIGS if "DEEPSPEED" in path.read_text()], ids=lambda p: p.stem)
def test_deepspeed_configs_build_the_plugin(path):
    # the dev extra brings deepspeed, which installs and runs without CUDA (tests/test_deepspeed_cpu.py)
    assert importlib.util.find_spec("deepspeed") is not None, "deepspeed is missing: `make install` (the dev extra)"
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin

    settings = {key: value for key, value in load_config_from_file(str(path)).deepspeed_config.items()
                if key not in LAUNCH_SETTINGS}
    assert DeepSpeedPlugin(**settings).zero_stage == settings["zero_stage"]
