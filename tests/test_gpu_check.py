"""benchmarks/gpu_check.sh runs on a GPU machine that CI never has; what a CPU can check of it runs here: the
script parses, its wheel list is the project's pinned versions, the CUDA tests it runs exist (and skip without a
GPU), and gpu_recipe.py takes the arguments the script gives it."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

# The CUDA tests gpu_check.sh must find: each exactness setting and each few-step path, for both families
CUDA_TESTS = {f"test_losses_log_probabilities_and_gradients_are_trls[{family}-{setting}]"
              for family in ("qwen2-vl", "qwen2.5-vl")
              for setting in ("cuda-float32-sdpa", "cuda-float32-sdpa-lora", "cuda-float32-sdpa-checkpointing",
                              "cuda-bf16-sdpa", "cuda-bf16-flash_attention_2", "cuda-bf16-flash_attention_2-lora")}
CUDA_TESTS |= {f"test_a_few_training_steps_on_cuda_are_trls[{family}-{path}]" for family in ("qwen2-vl", "qwen2.5-vl")
               for path in ("lora", "checkpointing", "deepspeed-zero3")}


def test_the_gpu_check_runs_what_a_cpu_can_check():
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu-check"], cwd=REPO, capture_output=True,
                            text=True, timeout=300, check=False, env={**os.environ, "PYTHON": sys.executable})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"gpu-wheels.txt: \d+ wheels, each at the version the project pins", output)
    listed = set(re.findall(r"^tests/test_grpo_trainer.py::(\S+)$", output, re.MULTILINE))
    assert listed == CUDA_TESTS  # every one collected, and every one skipped here (the script checks the count)
    assert re.search(r"CUDA tests .*: =+ 18 skipped, \d+ deselected", output)
    assert "[gpu_recipe] attention: " in output  # the attention it takes is said, whichever it is
    assert "4 steps of 8 x 2 completions (4 per prompt, 64 tokens)" in output  # the recipe's batch, 64 tokens


def _gpu_environment():
    """benchmarks/gpu_environment.py as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("gpu_environment", REPO / "benchmarks/gpu_environment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_wheel_off_its_pin_unpinned_or_from_torchs_family_is_refused(tmp_path):
    environment = _gpu_environment()
    check, installs_on_312 = environment.check, environment.installs_on_312
    wheels = tmp_path / "gpu-wheels.txt"
    wheels.write_text("trl==1.15.0\ntorch==2.14.1\nunpinned==1.0\nexplained==2.0  # not pinned: why\n")
    problems = check(wheels)
    assert "trl==1.15.0: constraints.txt pins 1.16.0" in problems
    assert any(problem.startswith("torch: never carried") for problem in problems)
    assert any(problem.startswith("unpinned==1.0: no project file pins it") for problem in problems)
    assert not any("explained" in problem for problem in problems)
    assert "transformers: missing (the exactness tests measure against it)" in problems
    assert installs_on_312(Path("multiprocess-0.70.19-py312-none-any.whl"))
    assert not installs_on_312(Path("multiprocess-0.70.19-py311-none-any.whl"))  # another Python's
    assert installs_on_312(Path("tokenizers-0.23.3-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"))
    assert not installs_on_312(Path("orjson-3.13.0-cp311-cp311-manylinux_2_17_x86_64.whl"))
