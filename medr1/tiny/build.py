"""The tiny Qwen2-VL of the embedded default, built and warmed up here (stage base_model, kind tiny)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medr1.config import BaseModelParams
from medr1.data.records import Record
from medr1.model.base import write_reference
from medr1.pipeline.hashing import folder_digest, folder_hashes
from medr1.synthetic.questions import ask
from medr1.synthetic.scenes import FACTORS, Scene
from medr1.task.prompts import INSTRUCTIONS, target_completion, user_prompt
from medr1.tiny.training import TRAINING_HOOK


def tokenizer_corpus(records: list[Record], seed: int) -> list[str]:
    """The data's text, the warm-up's generic text, the prompt instructions and the chat roles."""
    texts = [user_prompt(r.question, r.options, "no_think", "tiny") + " " + target_completion(r.answer)
             for r in records]
    rng = np.random.default_rng(seed)
    for _ in range(200):
        scene = Scene.random(rng)
        for factor in FACTORS:
            question = ask(scene, factor, rng, vocabulary="generic")
            texts.append(user_prompt(question.text, question.options, "no_think", "tiny") + " "
                         + target_completion(question.answer))
    texts += [text + " " + target_completion("A", mode) for mode, text in INSTRUCTIONS.items()]
    texts.append("system You are a helpful assistant. user assistant Picture Video")
    return texts


def build_tiny_base(records: list[Record], params: BaseModelParams, out: Path, published_at: Path) -> dict:
    """Build, warm up and save the tiny model in `out`; its reference names `published_at`, where the
    stage publishes `out` (the audit of a registered version names that folder, not the staging one)."""
    import torch

    from medr1.tiny.model import build_model, build_processor, train_tokenizer
    from medr1.tiny.warmup import warm_up

    torch.manual_seed(params.seed)
    tokenizer = train_tokenizer(tokenizer_corpus(records, params.seed), params.architecture.vocab_size)
    processor = build_processor(tokenizer, params.architecture.image_side)
    model = build_model(tokenizer, params.architecture, params.seed)
    losses = warm_up(model, processor, params.warmup)
    model.config.medr1_training_hook = TRAINING_HOOK
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    hashes = folder_hashes(out)
    reference = {
        "kind": "tiny",
        "path": str(published_at),
        "sha256": folder_digest(hashes),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "warmup_final_loss": float(np.mean(losses[-20:])),
    }
    return write_reference(out, reference)
