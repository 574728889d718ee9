"""What every benchmark prints beside its timings: the CPU model, as `lscpu` names it."""

from __future__ import annotations

import platform
import subprocess


def cpu_model() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
