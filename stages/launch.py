"""Run a training stage (train or sft) under its launcher, without a shell: `train.launcher`, or
`sft.launcher` for the sft stage where set (`Params.launcher_of`).

    python -m stages.launch train      # what dvc.yaml runs; then, e.g.:
    accelerate launch --config_file infra/accelerate/single-gpu.yaml -m stages.train

The launcher comes from params.yaml, which flow overrides and deployment runs can change, so it
never reaches a shell: it is checked word by word against the forms the pipeline runs
(`medr1.config.launcher_command`) and this process is replaced by it as an argument list.
"""

import os
import sys

from medr1.config import launcher_command, load_params
from medr1.errors import PipelineError, run_main

STAGES = ("train", "sft")


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in STAGES:
        raise PipelineError(f"usage: python -m stages.launch <{'|'.join(STAGES)}>")
    command = launcher_command(load_params().launcher_of(sys.argv[1]))
    if command[0] in ("python", "python3"):
        command[0] = sys.executable  # this environment's Python, as `python` on DVC's PATH would be
    sys.stdout.flush()
    os.execvp(command[0], [*command, "-m", f"stages.{sys.argv[1]}"])


if __name__ == "__main__":
    run_main(main, "launch")
