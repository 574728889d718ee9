"""make install hands pip's configured package sources to uv (infra/uv_install.py); make install-gpu's pins resolve
for Linux with CUDA (a dry run against the package index) and its flash-attn build checks its toolkit first."""

import importlib.util
import itertools
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "infra" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


uv_install = load("uv_install")


def test_pip_sources_from_files_and_environment_reach_uv(tmp_path, monkeypatch):
    config = tmp_path / "pip.conf"
    config.write_text("[install]\nconstraint = /etc/cap.txt\n"
                      "[global]\nconstraint = /etc/other.txt\ncert = /etc/ca.pem\n"
                      "extra-index-url =\n    file:///srv/a/simple\n    file:///srv/b/simple\n"  # pip's multi-line form
                      "no-index = true\ntrusted-host = mirror.internal\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_FIND_LINKS", "/srv/wheels")
    monkeypatch.setenv("PIP_CERT", "/etc/ca-from-environment.pem")  # a PIP_* variable wins over a file
    settings = uv_install.pip_settings()
    assert settings["cert"] == ["/etc/ca-from-environment.pem"]
    arguments = uv_install.uv_arguments(settings)
    pairs = list(itertools.pairwise(arguments))
    assert ("--extra-index-url", "file:///srv/a/simple") in pairs
    assert ("--extra-index-url", "file:///srv/b/simple") in pairs
    assert ("--find-links", "/srv/wheels") in pairs
    assert ("--constraint", "/etc/cap.txt") in pairs and ("--constraint", "/etc/other.txt") not in pairs
    assert ("--allow-insecure-host", "mirror.internal") in pairs and "--no-index" in arguments
    assert pairs[-1] == ("--index-strategy", "unsafe-best-match")


def test_no_pip_configuration_adds_only_the_index_strategy(monkeypatch):
    assert uv_install.uv_arguments({}) == ["--index-strategy", "unsafe-best-match"]


# The GPU environment (`make install-gpu`): the `gpu` extra, constraints-gpu.txt, and infra/gpu_env.py's checks.
gpu_env = load("gpu_env")
CPU_PINS = gpu_env.pins(ROOT / "constraints.txt")
GPU_PINS = gpu_env.pins(ROOT / "constraints-gpu.txt")


def test_the_gpu_extra_is_pinned_once_by_constraints_gpu():
    from packaging.requirements import Requirement

    extra = [Requirement(line) for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
             ["optional-dependencies"]["gpu"]]
    assert {requirement.name for requirement in extra} >= {"deepspeed", "flash-attn"}
    pinned = {**CPU_PINS, **GPU_PINS}  # deepspeed is constraints.txt's: the dev extra runs it on the CPU
    for requirement in extra:
        assert requirement.specifier.contains(pinned[requirement.name]), (requirement, pinned[requirement.name])
    # one place for each version: nothing constraints.txt pins is pinned again (or differently) for the GPU
    assert not set(GPU_PINS) & set(CPU_PINS), set(GPU_PINS) & set(CPU_PINS)


@pytest.mark.registry
def test_the_gpu_environment_resolves_for_linux_cuda_from_metadata_alone(tmp_path):
    """A dry run of `make install-gpu`'s resolution: `uv pip compile` of `.[dev,gpu]` with both constraint files, for
    Linux x86_64 with this Python, from the sources pip is configured with. uv reads wheels' metadata (PEP 658 files
    or ranged reads) and deepspeed's and flash-attn's sdists' PKG-INFO (setup.py-only sdists, so nothing is built and
    no torch is needed), in a cache of its own, so the check shows no large wheel was fetched."""
    cache = tmp_path / "uv-cache"
    python = ".".join(map(str, sys.version_info[:3]))
    command, environment = uv_install.uv_pip(str(Path(sys.executable).with_name("uv")), "compile", [
        str(ROOT / "pyproject.toml"), "--extra", "dev", "--extra", "gpu", "-c", str(ROOT / "constraints.txt"),
        "-c", str(ROOT / "constraints-gpu.txt"), "--python-platform", "x86_64-manylinux_2_28", "--python-version",
        python, "--cache-dir", str(cache), "--no-header", "--no-annotate", "--quiet"])
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, f"the GPU environment does not resolve against the package index:\n{result.stderr}"
    resolved = gpu_env.pins_in(result.stdout)
    for name in ("torch", "torchvision", "nvidia-cudnn-cu13", "nvidia-nccl-cu13", "triton"):  # the CUDA build
        assert resolved[name] == CPU_PINS[name], name
    assert resolved["deepspeed"] == CPU_PINS["deepspeed"] and resolved["flash-attn"] == GPU_PINS["flash-attn"]
    unpinned = sorted(set(resolved) - set(CPU_PINS) - set(GPU_PINS))
    assert not unpinned, f"pin these in constraints-gpu.txt: {[f'{name}=={resolved[name]}' for name in unpinned]}"
    largest = max((path.stat().st_size, path) for path in cache.rglob("*") if path.is_file())
    assert largest[0] < 20 * 2**20, f"the dry run fetched {largest[1]} ({largest[0] / 2**20:.0f} MiB)"


def write_nvcc(folder: Path, release: str) -> str:
    nvcc = folder / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text(f"#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
                    f"echo 'Cuda compilation tools, release {release}, V{release}.88'\n")
    nvcc.chmod(0o755)
    return gpu_env.nvcc_release(str(folder))


def test_flash_attn_build_needs_a_cuda_build_of_torch_and_nvcc_of_its_major_version(tmp_path):
    pin = GPU_PINS["flash-attn"]
    assert gpu_env.toolkit_problem("2.14.1+cu130", "13.0", str(tmp_path), write_nvcc(tmp_path, "13.0"), pin,
                                   False) is None
    cpu_torch = gpu_env.toolkit_problem("2.14.1+cpu", None, None, None, pin, False)
    assert "CPU build" in cpu_torch and "pip config list" in cpu_torch
    no_toolkit = gpu_env.toolkit_problem("2.14.1+cu130", "13.0", None, None, pin, False)
    assert "none was found" in no_toolkit and "CUDA_HOME" in no_toolkit and ".venv/wheels" in no_toolkit
    older = gpu_env.toolkit_problem("2.14.1+cu130", "13.0", str(tmp_path), "12.8", pin, False)
    assert "CUDA 12.8" in older and "CUDA 13.0" in older
    # built already, or a prebuilt wheel in the wheel folder: nothing to compile, so no toolkit needed
    assert gpu_env.toolkit_problem("2.14.1+cu130", "13.0", None, None, pin, True) is None


def test_flash_attn_is_built_as_cxx20_and_a_changed_setup_py_is_refused():
    flash_attn_wheel = load("flash_attn_wheel")
    setup_py = ('nvcc_flags = ["-O3", "-std=c++17", "--use_fast_math"]\ncompiler_c17_flag=["-O3", "-std=c++17"]\n'
                'cc_flag += ["-O3","-std=c++17",]\n"cxx": ["-O3", "-std=c++17"] + generator_flag,\n')
    raised = flash_attn_wheel.raised_standard(setup_py, "2.8.3.post2")
    assert raised.count('"-std=c++20"') == 4 and "c++17" not in raised
    with pytest.raises(SystemExit, match="names \"-std=c\\+\\+17\" 3 times"):
        flash_attn_wheel.raised_standard(setup_py.replace('"-std=c++17"', '"-std=c++20"', 1), "2.9.0")
