"""The checks around `make install-gpu`'s flash-attn build, each naming what to do when it fails.

    python infra/gpu_env.py toolkit WHEEL_DIR   # before: torch is a CUDA build, and its CUDA toolkit (nvcc) is there
    python infra/gpu_env.py report              # after: the versions installed, each imported

flash-attn ships as an sdist that compiles its kernels against the installed torch with nvcc. Without a toolkit of
torch's CUDA major version the build dies minutes in, in the middle of uv's output; this says so in one line first.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def canonical(name: str) -> str:
    """A distribution's normalized name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins_in(text: str) -> dict[str, str]:
    """The `name==version` lines of a constraints file or of `uv pip compile`'s output, by normalized name."""
    found = {}
    for line in text.splitlines():
        match = PIN.match(line.strip())
        if match:
            found[canonical(match.group(1))] = match.group(2)
    return found


def pins(path: Path) -> dict[str, str]:
    return pins_in(path.read_text())


def installed(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def nvcc_release(cuda_home: str) -> str:
    """`nvcc --version`'s release, e.g. "13.0"."""
    output = subprocess.run([str(Path(cuda_home) / "bin" / "nvcc"), "--version"], capture_output=True, text=True,
                            check=True).stdout
    match = re.search(r"release (\d+\.\d+)", output)
    if not match:
        raise RuntimeError(f"cannot read the release from {cuda_home}/bin/nvcc --version: {output.strip()!r}")
    return match.group(1)


def toolkit_problem(torch_version: str, torch_cuda: str | None, cuda_home: str | None, nvcc: str | None,
                    flash_attn_pin: str, flash_attn_built: bool) -> str | None:
    """Why flash-attn cannot be built here, or None. `nvcc` is the toolkit's release (None when there is none);
    `flash_attn_built`: the pinned flash-attn is installed already, or its wheel is in the wheel folder."""
    if torch_cuda is None:
        return (f"torch {torch_version} is a CPU build: make install-gpu needs PyPI's CUDA build of the pinned torch. "
                "A wheel folder or index in `pip config list` served this one: take it out of pip's configuration "
                "(or pin it away there), then run make install-gpu again")
    if flash_attn_built:
        return None  # nothing to compile
    prebuilt = (f"or put a prebuilt flash_attn {flash_attn_pin} wheel for torch {torch_version} (CUDA "
                f"{torch_cuda.split('.')[0]}, cp{sys.version_info.major}{sys.version_info.minor}) into .venv/wheels")
    if cuda_home is None or nvcc is None:
        return (f"flash-attn {flash_attn_pin} compiles against torch {torch_version} with nvcc from a CUDA "
                f"{torch_cuda.split('.')[0]}.x toolkit, and none was found (CUDA_HOME, nvcc on PATH, /usr/local/cuda): "
                f"install a CUDA {torch_cuda} toolkit (an nvidia/cuda:{torch_cuda}.x-devel image has one) and set "
                f"CUDA_HOME, {prebuilt}")
    if nvcc.split(".")[0] != torch_cuda.split(".")[0]:
        return (f"{cuda_home}/bin/nvcc is CUDA {nvcc} but torch {torch_version} was built with CUDA {torch_cuda}, and "
                f"torch refuses to compile extensions across CUDA major versions: set CUDA_HOME to a CUDA "
                f"{torch_cuda.split('.')[0]}.x toolkit, {prebuilt}")
    return None


def check_toolkit(wheel_dir: Path) -> int:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME  # where flash-attn's build will look, found the same way

    flash_attn_pin = pins(ROOT / "constraints-gpu.txt")["flash-attn"]
    nvcc = nvcc_release(CUDA_HOME) if CUDA_HOME and (Path(CUDA_HOME) / "bin" / "nvcc").exists() else None
    built = installed("flash-attn") == flash_attn_pin or any(wheel_dir.glob(f"flash_attn-{flash_attn_pin}-*.whl"))
    problem = toolkit_problem(torch.__version__, torch.version.cuda, CUDA_HOME, nvcc, flash_attn_pin, built)
    if problem:
        print(f"make install-gpu: {problem}", file=sys.stderr)
        return 1
    print(f"make install-gpu: torch {torch.__version__} (CUDA {torch.version.cuda}), "
          + (f"flash-attn {flash_attn_pin} already built" if built else f"nvcc {nvcc} at {CUDA_HOME}"))
    return 0


def report() -> int:
    import torch

    lines = [f"torch {torch.__version__} (CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s) visible)"]
    failed = False
    for distribution, module in (("deepspeed", "deepspeed"), ("flash-attn", "flash_attn")):
        try:
            __import__(module)
            lines.append(f"{distribution} {installed(distribution)}")
        except (ImportError, OSError) as error:  # an extension built against another torch: undefined symbols
            built = " and .venv/wheels/flash_attn-*.whl" if distribution == "flash-attn" else ""
            lines.append(f"{distribution} {installed(distribution)} does not import ({error!r}): remove it "
                         f"(.venv/bin/uv pip uninstall --python .venv/bin/python {distribution}{built}) and run make "
                         "install-gpu again, which builds it against this torch")
            failed = True
    print("GPU environment: " + "; ".join(lines), file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


def main() -> int:
    if sys.argv[1:2] == ["toolkit"] and len(sys.argv) == 3:
        return check_toolkit(Path(sys.argv[2]))
    if sys.argv[1:] == ["report"]:
        return report()
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
