"""The base model a run starts from, as models/base records it: a reference (kind, path, sha256)
in base_model.json, beside the model itself for a model built here, or pointing at a local
Qwen2-VL / Qwen2.5-VL checkpoint folder."""

from __future__ import annotations

import json
from pathlib import Path

from medr1.errors import MissingFileError
from medr1.model.folder_check import broken_files
from medr1.pipeline.hashing import folder_digest, folder_hashes

REFERENCE = "base_model.json"


def write_reference(out: Path, reference: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / REFERENCE).write_text(json.dumps(reference, indent=1))
    return reference


def reference_local_base(path: Path, out: Path) -> dict:
    if not (path / "config.json").is_file():
        raise MissingFileError(f"base_model.path {path} has no config.json: point it at a Qwen2-VL checkpoint folder")
    if problems := broken_files(path):
        raise MissingFileError(f"base_model.path {path} is not a whole checkpoint: {'; '.join(problems)}. Download "
                               "or copy it again")
    return write_reference(out, {"kind": "local", "path": str(path.resolve()),
                                 "sha256": folder_digest(folder_hashes(path))})


def base_model_dir(out: Path) -> Path:
    """The folder to load the base model from: `out` itself, or the local checkpoint it points at."""
    reference = base_reference(out)
    return Path(reference["path"]) if reference["kind"] == "local" else out


def base_reference(out: Path) -> dict:
    try:
        return json.loads((out / REFERENCE).read_text())
    except FileNotFoundError as error:
        raise MissingFileError(f"no {out / REFERENCE}: `dvc repro base_model` writes the base model") from error
