"""The Python environment benchmarks/gpu_check.sh runs in, on a GPU machine that reaches no package index.

    python benchmarks/gpu_environment.py check            # benchmarks/gpu-wheels.txt against the project's pins
    python benchmarks/gpu_environment.py prepare .whl     # where PyPI is reachable: those wheels, for CPython 3.12
    python benchmarks/gpu_environment.py report           # on the GPU machine: what is installed, against the pins

`prepare` runs, for each line of benchmarks/gpu-wheels.txt,

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl NAME==VERSION

and builds the packages PyPI has only as source (antlr4-python3-runtime 4.9.3, deepspeed) with
`pip wheel --no-deps --no-build-isolation` in this environment (DeepSpeed with DS_BUILD_OPS=0, which needs torch
at build time), refusing any that does not come out pure Python (py3-none-any), since it must install on 3.12.
It then prints the wheels' total size beside what a device call carries (64 MiB, the repository included).

`report` prints the interpreter, torch (the image's CUDA build: never carried) with its CUDA version and GPU,
and each carried package's installed version against its pin; it imports what the checks import, DVCLive's
logger included, and exits 1 naming whatever is missing or at another version, before any GPU time is spent
on tests that would fail on it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "infra"))  # infra/ is a folder of scripts, not a package
from gpu_env import canonical, pins_in  # the one reader of pins, once its folder is on the path

WHEELS = REPO / "benchmarks/gpu-wheels.txt"
# torch and its CUDA libraries come from the GPU machine's image: a CUDA wheel of torch is about 900 MB
NEVER_CARRIED = ("torch", "torchvision", "torchaudio", "triton", "nvidia-", "cuda-")
# the trainer's exactness is measured against these: a wheel list without them would test the image's versions
EXACTNESS_LIBRARIES = ("transformers", "tokenizers", "huggingface-hub", "trl", "accelerate", "peft", "datasets")
MIN_TORCH = (2, 6)  # transformers 5 refuses to load checkpoints with an older torch
DEVICE_CALL_MIB = 64
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
# What the GPU checks import beyond torch: the tests, the stages gpu_recipe.py runs, DeepSpeed where carried
IMPORTED = ("transformers", "trl", "accelerate", "peft", "datasets", "pydantic", "ruamel.yaml", "math_verify",
            "dvclive", "medr1.train.grpo_trainer", "medr1.train.grpo", "medr1.task.rewards", "medr1.pipeline.recipes",
            "medr1.evaluate.decoding", "stages.train", "pytest")


def wheel_lines(path: Path = WHEELS) -> list[tuple[str, str, str]]:
    """(name as written, version, the line's comment) of each wheel the GPU check carries."""
    lines = []
    for line in path.read_text().splitlines():
        requirement, _, comment = line.partition("#")
        if requirement.strip():
            name, separator, version = requirement.strip().partition("==")
            lines.append((name, version if separator else "", comment.strip()))
    return lines


def project_pins(repo: Path = REPO) -> dict[str, dict[str, str]]:
    """The project's pins, by file: constraints.txt, constraints-gpu.txt where it exists, and pyproject.toml's
    `name==version` requirements."""
    sources = {"constraints.txt": pins_in((repo / "constraints.txt").read_text())}
    if (repo / "constraints-gpu.txt").is_file():
        sources["constraints-gpu.txt"] = pins_in((repo / "constraints-gpu.txt").read_text())
    pyproject = (repo / "pyproject.toml").read_text()
    sources["pyproject.toml"] = pins_in("\n".join(re.findall(r'"([^"]+==[^"]+)"', pyproject)))
    return sources


def check(path: Path = WHEELS, repo: Path = REPO) -> list[str]:
    """What is wrong with the wheel list: a version another than a project file pins, a package no file pins
    and no comment explains, a duplicate, torch's family, or an exactness library left out."""
    problems, seen = [], set()
    sources = project_pins(repo)
    for name, version, comment in wheel_lines(path):
        key = canonical(name)
        if not version:
            problems.append(f"{name}: no ==version")
        if key in seen:
            problems.append(f"{name}: listed twice")
        seen.add(key)
        if any(key == prefix or (prefix.endswith("-") and key.startswith(prefix)) for prefix in NEVER_CARRIED):
            problems.append(f"{name}: never carried (the image's CUDA build is used; its wheels exceed a call)")
        pinned = {source: pins[key] for source, pins in sources.items() if key in pins}
        for source, pin in pinned.items():
            if pin != version:
                problems.append(f"{name}=={version}: {source} pins {pin}")
        if not pinned and not comment:
            problems.append(f"{name}=={version}: no project file pins it; pin it, or say on its line why not")
    problems += [f"{name}: missing (the exactness tests measure against it)" for name in EXACTNESS_LIBRARIES
                 if canonical(name) not in seen]
    return problems


def prepare(destination: Path, path: Path = WHEELS) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    platforms = [argument for platform in PLATFORMS for argument in ("--platform", platform)]
    for name, version, _ in wheel_lines(path):
        requirement = f"{name}=={version}"
        if _wheel_for(destination, name, version):
            continue
        download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(destination),
                    requirement]
        if subprocess.run(download, check=False, capture_output=True, text=True).returncode != 0:
            # no wheel on the index: build one here; only pure Python installs on the GPU machine's 3.12
            print(f"{requirement}: no wheel on the index, building one (pip wheel --no-deps --no-build-isolation)",
                  flush=True)
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "-w", str(destination), requirement], check=True,
                           env={**os.environ, "DS_BUILD_OPS": "0"})  # DeepSpeed: no kernels compiled at build
        built = _wheel_for(destination, name, version)
        if built is None:
            sys.exit(f"{requirement}: no wheel in {destination} after pip")
        if not installs_on_312(built):
            sys.exit(f"{built.name}: neither pure Python nor built for CPython 3.12 on x86_64: it will not install")
    wheels = sorted(destination.glob("*.whl"))
    total = sum(wheel.stat().st_size for wheel in wheels) / 2**20
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    repository = sum((REPO / name).stat().st_size for name in tracked.decode().split("\0")
                     if name and (REPO / name).is_file()) / 2**20
    print(f"{len(wheels)} wheels, {total:.1f} MiB in {destination}; with the repository ({repository:.1f} MiB) "
          f"{total + repository:.1f} of the {DEVICE_CALL_MIB} MiB a device call carries")
    if total + repository > DEVICE_CALL_MIB:
        sys.exit("too large for one device call")


def installs_on_312(wheel: Path) -> bool:
    """Whether a wheel's tags (name-version-python-abi-platform) fit CPython 3.12 on Linux x86_64."""
    python, abi, platform = (part.split(".") for part in wheel.stem.split("-")[-3:])
    if abi == ["none"] and platform == ["any"]:
        return bool({"py3", "py312"} & set(python))  # py311 would be another Python's
    abi3 = "abi3" in abi and any(re.fullmatch(r"cp3(\d+)", tag) and int(tag[3:]) <= 12 for tag in python)
    return any("x86_64" in tag for tag in platform) and ("cp312" in python or abi3)


def _wheel_for(folder: Path, name: str, version: str) -> Path | None:
    """The wheel of `name` `version` in `folder`, whatever separators its file name uses."""
    prefix = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"
    return next((wheel for wheel in folder.glob("*.whl") if wheel.name.lower().startswith(prefix)), None)


def report(path: Path = WHEELS) -> int:
    """Print what the GPU check runs on; 1 when something it needs is missing or not the carried version."""
    problems = []
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    try:
        import torch
    except ImportError:
        print("torch: not installed; this check uses the machine's own CUDA build of torch (not carried)")
        return 1
    pinned_torch = pins_in((REPO / "constraints.txt").read_text()).get("torch")
    print(f"torch {torch.__version__} (the image's; the CPU install pins {pinned_torch}), CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}")
    if tuple(int(part) for part in re.findall(r"\d+", torch.__version__)[:2]) < MIN_TORCH:
        problems.append(f"torch {torch.__version__} is older than {'.'.join(map(str, MIN_TORCH))}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}, compute capability {torch.cuda.get_device_capability()}, "
              f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB, bf16 "
              f"{torch.cuda.is_bf16_supported()}")
    else:
        problems.append("torch sees no CUDA GPU")
    for name, version, _ in wheel_lines(path):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        print(f"{name}: {installed or 'not installed'}" + ("" if installed == version else f" (carried: {version})"))
        if installed != version:
            problems.append(f"{name} {installed or 'missing'}, not the carried {version} (is it in .whl/?)")
    carried = {canonical(name) for name, _, _ in wheel_lines(path)}
    for optional, without in (("flash_attn", "the flash_attention_2 tests skip, gpu_recipe.py runs sdpa"),
                              ("deepspeed", "the ZeRO-3 test skips")):
        if canonical(optional) in carried:
            continue
        try:
            print(f"{optional}: {importlib.metadata.version(optional.replace('_', '-'))}")
        except importlib.metadata.PackageNotFoundError:
            print(f"{optional}: not installed ({without})")
    for module in IMPORTED + (("deepspeed",) if "deepspeed" in carried else ()):
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - any failure to import is what this report is for
            problems.append(f"import {module}: {type(error).__name__}: {error}")
    try:  # what the train stage's logger does first
        from dvclive import Live

        with tempfile.TemporaryDirectory() as folder:
            Live(dir=folder, dvcyaml=False, save_dvc_exp=False, report=None).end()
    except Exception as error:  # noqa: BLE001 - likewise
        problems.append(f"dvclive.Live: {type(error).__name__}: {error}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="the wheel list against constraints.txt (and the other pins)")
    prepare_parser = commands.add_parser("prepare", help="download or build the wheels into a folder")
    prepare_parser.add_argument("destination", type=Path)
    commands.add_parser("report", help="on the GPU machine: versions, GPU, imports")
    args = parser.parse_args()
    if args.command == "check":
        problems = check()
        for problem in problems:
            print(f"gpu-wheels.txt: {problem}")
        if problems:
            sys.exit(1)
        print(f"gpu-wheels.txt: {len(wheel_lines())} wheels, each at the version the project pins")
    elif args.command == "prepare":
        prepare(args.destination)
    else:
        sys.exit(report())


if __name__ == "__main__":
    main()
