"""train.launcher read for planning: how many processes train, and how DeepSpeed shards their
state (from an accelerate config file's distributed_type and zero_stage, or the zero_optimization stage
of the DeepSpeed file it names)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from medr1.config import parsed_launcher


@dataclass(frozen=True)
class Launch:
    """How many processes train, and how DeepSpeed shards their state."""

    processes: int  # in the whole run, every machine's
    zero_stage: int | None  # None: no DeepSpeed
    description: str


def launch_of(launcher: str, root: Path = Path(".")) -> Launch:
    """train.launcher as processes and ZeRO stage (an accelerate config file is read from `root`)."""
    program, options = parsed_launcher(launcher)
    if program in ("python", "python3"):
        return Launch(1, None, "one process (python)")
    if program == "torchrun":
        per_node = int(options.get("--nproc_per_node") or options.get("--nproc-per-node") or 1)
        nodes = int(options.get("--nnodes") or 1)
        return Launch(per_node * nodes, None, f"torchrun, {nodes} node(s) x {per_node} process(es), DDP")
    config = yaml.safe_load((root / options["--config_file"]).read_text()) if "--config_file" in options else {}
    processes = int(options.get("--num_processes") or config.get("num_processes") or 1)  # accelerate's: in all
    deepspeed = config.get("distributed_type") == "DEEPSPEED"
    zero = _zero_stage(config.get("deepspeed_config", {}), root) if deepspeed else None
    kind = f"DeepSpeed ZeRO-{zero}" if deepspeed else "DDP" if processes > 1 else "one process"
    return Launch(processes, zero, f"accelerate launch {options.get('--config_file', '(no config file)')}, "
                                   f"{processes} process(es), {kind}")


def _zero_stage(settings: dict, root: Path) -> int:
    """The ZeRO stage of an accelerate config's deepspeed_config: its zero_stage, or, with a
    deepspeed_config_file (a path from the repository root, as the stages run), that file's."""
    if "deepspeed_config_file" in settings:
        deepspeed = json.loads((root / settings["deepspeed_config_file"]).read_text())
        return int(deepspeed.get("zero_optimization", {}).get("stage", 0))
    return int(settings.get("zero_stage", 0))
