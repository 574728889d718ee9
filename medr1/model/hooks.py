"""The one seam through which a model built for a demo changes how it trains.

A model's config may name a training hook, `medr1_training_hook: "medr1.<module>:<function>"`
(the tiny model of the embedded default does; see medr1/tiny/training.py). Training calls it on
the freshly loaded model before the trainer is built. A real Qwen2-VL or Qwen2.5-VL checkpoint
names none, so this module never imports the demo's code for it.
"""

from __future__ import annotations

import importlib

from medr1.data.records import Record
from medr1.errors import PipelineError

HOOK_KEY = "medr1_training_hook"


def apply_training_hook(model, tokenizer, records: list[Record]) -> None:
    target = getattr(model.config, HOOK_KEY, None)
    if not target:
        return
    module, _, function = str(target).partition(":")
    if not module.startswith("medr1.") or not function:
        raise PipelineError(f"the model's config names {HOOK_KEY} {target!r}: only medr1.<module>:<function> "
                            f"hooks are run; remove {HOOK_KEY} from its config.json")
    getattr(importlib.import_module(module), function)(model, tokenizer, records)
