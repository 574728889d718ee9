"""Whether a checkpoint folder's files are whole, read from their headers and ends, without
loading a tensor: a safetensors file's header and the data it promises, a sharded index's
shards, torch.save archives' central directories (what a kill or a full disk cuts short)."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

INDEX = "model.safetensors.index.json"


def broken_files(folder: Path) -> list[str]:
    """One line per file of `folder` that cannot be whole ("model.safetensors: 1,024 of 4,096 bytes"),
    or a missing config/weights; [] when every file a loader reads looks complete."""
    problems = []
    config = "adapter_config.json" if (folder / "adapter_config.json").is_file() else "config.json"  # LoRA: peft's
    try:
        json.loads((folder / config).read_text())
    except FileNotFoundError:
        problems.append(f"{config}: missing")
    except (OSError, ValueError) as error:
        problems.append(f"{config}: not readable JSON ({error})")
    weights = sorted(folder.glob("*.safetensors"))
    if (folder / INDEX).is_file():
        try:
            shards = set(json.loads((folder / INDEX).read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError) as error:
            problems.append(f"{INDEX}: not a readable index ({error})")
            shards = set()
        problems += [f"{shard}: missing (named by {INDEX})" for shard in sorted(shards)
                     if not (folder / shard).is_file()]
    archives = sorted(path for pattern in ("*.bin", "*.pt", "*.pth") for path in folder.glob(pattern))
    if not weights and not any(path.name.endswith(".bin") for path in archives):
        problems.append("no weights file (*.safetensors or pytorch_model.bin)")
    problems += [problem for path in weights if (problem := _safetensors_problem(path))]
    problems += [f"{path.name}: not a whole torch.save archive" for path in archives if not _whole_zip(path)]
    return problems


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with path.open("rb") as stream:
        head = stream.read(8)
        if len(head) < 8:
            return f"{path.name}: {size} bytes, too short for a safetensors header"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return f"{path.name}: header of {length:,} bytes in a {size:,}-byte file (truncated)"
        try:
            header = json.loads(stream.read(length))
        except ValueError:
            return f"{path.name}: unreadable safetensors header"
    end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
    if 8 + length + end > size:
        return f"{path.name}: {size:,} of {8 + length + end:,} bytes (truncated)"
    return None


def _whole_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
