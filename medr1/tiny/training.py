"""How the tiny model trains: the one place where the demo changes what GRPO and SFT update.

Training calls `restrict_training` through the seam in medr1/model/hooks.py, because the tiny
model's config names it (`medr1_training_hook`); a real checkpoint names nothing and trains as it is.
"""

from __future__ import annotations

from medr1.data.records import LETTERS, Record
from medr1.tiny.model import TAG_TOKENS
from medr1.tiny.option_reader import freeze_option_reader, is_wired, mask_gradient

TRAINING_HOOK = "medr1.tiny.training:restrict_training"


def restrict_training(model, tokenizer, records: list[Record]) -> None:
    """On the wired tiny model only the option words' embeddings train (see below)."""
    if is_wired(model):
        train_option_words_only(model, tokenizer, records)


def option_word_ids(tokenizer, records: list[Record]) -> list[int]:
    """Token ids of the options' texts ("CT", "Grade", ...), without letters and special tokens."""
    excluded = set(tokenizer.all_special_ids) | set(tokenizer.convert_tokens_to_ids(list(LETTERS)))
    excluded |= set(tokenizer.convert_tokens_to_ids(list(TAG_TOKENS)))
    texts = sorted({text for record in records for text in record.options.values()})
    ids = {i for text in texts for i in tokenizer(" " + text, add_special_tokens=False)["input_ids"]}
    return sorted(ids - excluded)


def train_option_words_only(model, tokenizer, records: list[Record]) -> None:
    """On the tiny wired model GRPO learns what the option words mean, nothing else.

    The option reader, the answer format and the eyes stay as the base stage left them; only
    the input embeddings of the words that options are made of train. The output embeddings
    are untied into a frozen copy first, so that moving a word's meaning never changes how
    likely the model is to *say* it (a tied, growing "Liver" row would outbid `<|im_end|>`).
    """
    import torch

    freeze_option_reader(model)
    model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    model.config.tie_word_embeddings = False
    model.config.get_text_config().tie_word_embeddings = False
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    embeddings = model.get_input_embeddings().weight
    embeddings.requires_grad_(True)
    rows = torch.zeros_like(embeddings)
    rows[option_word_ids(tokenizer, records)] = 1.0
    mask_gradient(embeddings, rows)
