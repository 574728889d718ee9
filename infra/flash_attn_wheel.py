"""Build flash-attn's wheel against the torch in this environment, with the one change torch 2.14 needs.

flash-attn 2.8.3.post2's setup.py compiles with `-std=c++17`, for its host file and its CUDA kernels. torch 2.14's
headers stop such a build at `#error C++20 or later compatible compiler is required to use ATen`
(torch.utils.cpp_extension adds -std=c++20 only to extensions that name no standard themselves). flash-attn's sources
compile as C++20 (its host file against torch 2.14.1's headers, its kernels with nvcc 13.0: README, GPU environment),
so this fetches the pinned sdist with pip, raises that flag in setup.py, and builds the wheel without build
isolation (setup.py imports torch) into WHEEL_DIR, where `make install-gpu` installs it from. A flash_attn wheel of
the pinned version already in WHEEL_DIR (built before, or a prebuilt one put there) is used as it is.

    python infra/flash_attn_wheel.py WHEEL_DIR
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_env import ROOT, pins  # infra/ is a folder of scripts, not a package

# setup.py's standard flag, on each of its four compiler flag lists (CUDA host, CUDA kernels, ROCm twice)
OLD_STANDARD, NEW_STANDARD, EXPECTED = '"-std=c++17"', '"-std=c++20"', 4


def raised_standard(setup_py: str, version: str) -> str:
    """setup.py with C++20 where it says C++17; refuses a file that does not have exactly the flags it was read for."""
    found = setup_py.count(OLD_STANDARD)
    if found != EXPECTED:
        raise SystemExit(f"flash-attn {version}'s setup.py names {OLD_STANDARD} {found} times, where 2.8.3.post2's "
                         f"names it {EXPECTED}: read the new setup.py, then update infra/flash_attn_wheel.py (or drop "
                         "it if this version builds against torch as it is)")
    return setup_py.replace(OLD_STANDARD, NEW_STANDARD)


def existing_wheel(wheel_dir: Path, version: str) -> Path | None:
    return next(iter(sorted(wheel_dir.glob(f"flash_attn-{version}-*.whl"))), None)


def build(wheel_dir: Path) -> Path:
    version = pins(ROOT / "constraints-gpu.txt")["flash-attn"]
    wheel = existing_wheel(wheel_dir, version)
    if wheel:
        print(f"flash-attn {version}: using {wheel}")
        return wheel
    with tempfile.TemporaryDirectory(prefix="flash-attn-") as scratch:
        scratch = Path(scratch)
        # pip reads the metadata of what it downloads: without isolation, so setup.py finds torch
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", "flash-attn",
                        "--no-build-isolation", f"flash-attn=={version}", "--dest", str(scratch)], check=True)
        (sdist,) = scratch.glob("flash_attn-*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(scratch, filter="data")
        (source,) = [path for path in scratch.iterdir() if path.is_dir()]
        setup_py = source / "setup.py"
        setup_py.write_text(raised_standard(setup_py.read_text(), version))
        print(f"flash-attn {version}: compiling against torch with {NEW_STANDARD}; this takes a while")
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
                        "--wheel-dir", str(wheel_dir), str(source)], check=True)
    wheel = existing_wheel(wheel_dir, version)
    if wheel is None:
        raise SystemExit(f"flash-attn {version}: the build ended without a wheel in {wheel_dir}")
    print(f"flash-attn {version}: built {wheel}")
    return wheel


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    wheel_dir = Path(sys.argv[1])
    wheel_dir.mkdir(parents=True, exist_ok=True)
    build(wheel_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
