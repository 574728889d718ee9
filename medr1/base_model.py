"""The base model: build and warm up the tiny Qwen2-VL, or point at a local Qwen2-VL checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medr1.config import BaseModelParams
from medr1.lineage import folder_digest, folder_hashes
from medr1.prompts import INSTRUCTIONS, target_completion, user_prompt
from medr1.questions import ask
from medr1.records import Record
from medr1.scenes import FACTORS, Scene

REFERENCE = "base_model.json"


def tokenizer_corpus(records: list[Record], seed: int) -> list[str]:
    """The data's text, the warm-up's generic text, the prompt instructions and the chat roles."""
    texts = [user_prompt(r.question, r.options) + " " + target_completion(r.answer) for r in records]
    rng = np.random.default_rng(seed)
    for _ in range(200):
        scene = Scene.random(rng)
        for factor in FACTORS:
            question = ask(scene, factor, rng, vocabulary="generic")
            texts.append(user_prompt(question.text, question.options) + " " + target_completion(question.answer))
    texts += [text + " " + target_completion("A", mode) for mode, text in INSTRUCTIONS.items()]
    texts.append("system You are a helpful assistant. user assistant Picture Video")
    return texts


def build_tiny_base(records: list[Record], params: BaseModelParams, out: Path) -> dict:
    import torch

    from medr1.tiny_model import build_model, build_processor, train_tokenizer
    from medr1.warmup import warm_up

    torch.manual_seed(params.seed)
    tokenizer = train_tokenizer(tokenizer_corpus(records, params.seed), params.architecture.vocab_size)
    processor = build_processor(tokenizer, params.architecture.image_side)
    model = build_model(tokenizer, params.architecture, params.seed)
    losses = warm_up(model, processor, params.warmup)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    hashes = folder_hashes(out)
    reference = {
        "kind": "tiny",
        "path": str(out),
        "sha256": folder_digest(hashes),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "warmup_final_loss": float(np.mean(losses[-20:])),
    }
    (out / REFERENCE).write_text(json.dumps(reference, indent=1))
    return reference


def reference_local_base(path: Path, out: Path) -> dict:
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"base_model.path {path} has no config.json: point it at a Qwen2-VL checkpoint folder")
    reference = {"kind": "local", "path": str(path.resolve()), "sha256": folder_digest(folder_hashes(path))}
    out.mkdir(parents=True, exist_ok=True)
    (out / REFERENCE).write_text(json.dumps(reference, indent=1))
    return reference


def base_model_dir(out: Path) -> Path:
    """The folder to load the base model from: `out` itself, or the local checkpoint it points at."""
    reference = json.loads((out / REFERENCE).read_text())
    return out if reference["kind"] == "tiny" else Path(reference["path"])


def base_reference(out: Path) -> dict:
    return json.loads((out / REFERENCE).read_text())
