"""TRL's GRPOTrainer at the cost of its distinct work: each distinct prompt of a step is prepared
once (medr1/train/distinct_prompts.py), each distinct image is encoded once per forward
(medr1/train/distinct_images.py), in the policy, old-policy, reference and generation passes, and
each distinct prompt runs through the language model once per log-probability pass and once in
generation's prefill, its completions continuing from its key-value cache
(medr1/train/shared_prompts.py). On the CPU, the log-probability passes score only the completion
positions, as TRL's fused LM head does where Triton runs (medr1/train/lm_head.py).

Losses, log-probabilities and gradients are TRL's to float tolerance (tests/test_grpo_trainer.py).
The subclass overrides two methods of TRL's and relies on how TRL's own methods call the processor and
the model; `TRL_SOURCES` pins those methods' source, so a TRL upgrade that changes them fails
tests/test_grpo_trainer.py until this file is checked against the new code.
"""

from __future__ import annotations

from contextlib import ExitStack

from trl import GRPOTrainer

from medr1.train.distinct_images import encode_each_image_once
from medr1.train.distinct_prompts import prompts_prepared_once, share_identical_images
from medr1.train.lm_head import completion_positions_scored
from medr1.train.shared_prompts import share_prompts

TRL_VERSION = "1.16.0"
# sha256 of the source of each GRPOTrainer method this subclass overrides or depends on:
#   _generate_and_score_completions: overridden, runs TRL's with prompts_prepared_once
#   _generate: deep-copies the prompts (shared images stay shared) and tokenizes them
#   _tokenize_prompts: processing_class.apply_chat_template(tokenize=True, return_dict=True)
#   _get_per_token_logps_and_entropies: overridden, runs TRL's with the prompt length set; TRL's calls
#     model(input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids), rows = prompt + completion
TRL_SOURCES = {
    "_generate_and_score_completions": "1fa48922792dcd5c72da155cfe99db477771a7c61cde15519fe8c86d0cdc0b65",
    "_generate": "2a27fdf8f5e6f3562508eec3efb9e9dade2e0bf810de5031cdfab429d0a048f2",
    "_tokenize_prompts": "d2d27f7c9bfda85f1c3225785fa2f09466c428803be6afa8a6c46290f7171a15",
    "_get_per_token_logps_and_entropies": "ea73c3909275851d0cd664b1e7694905fdcd9c285e848ae923d7402234f2edce",
}


class DistinctWorkGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose steps prepare each distinct prompt once, encode each distinct image once per
    forward, and run each distinct prompt through the language model once per forward; everything
    else is TRL's."""

    def __init__(self, *args, train_dataset=None, **kwargs):
        super().__init__(*args, train_dataset=_undecoded(train_dataset), **kwargs)
        models = [model for model in (self.model, self.ref_model) if model is not None]
        self.image_hooks = [hooks for model in models if (hooks := encode_each_image_once(model)) is not None]
        self.shared_prompts = [shared for model in models if (shared := share_prompts(model)) is not None]

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        with ExitStack() as stack:
            stack.enter_context(completion_positions_scored())
            for shared in self.shared_prompts:
                stack.enter_context(shared.prompt_length(input_ids.size(1) - logits_to_keep))
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              *args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        share_identical_images(inputs)
        with prompts_prepared_once(self):
            return super()._generate_and_score_completions(inputs)


def _undecoded(dataset):
    """`dataset` with its image column left undecoded: the dataloader would decode a question's image
    for each of its num_generations copies; `share_identical_images` decodes it once a step."""
    from datasets import Dataset, Image

    if isinstance(dataset, Dataset) and isinstance(dataset.features.get("image"), Image):
        return dataset.cast_column("image", Image(decode=False))
    return dataset
