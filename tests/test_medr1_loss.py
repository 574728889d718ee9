"""Med-R1's GRPO loss against ours under the med-r1 recipes: its `Qwen2VLGRPOTrainer.compute_loss` (its copy of
TRL 0.14's, transcribed in tests/medr1_reference.py) and our trainer's `compute_loss` (TRL 1.16's `_compute_loss`)
on the same batch, the trainer configured by the train stage's own `grpo_config` from the applied recipe's params.

The batch has what makes the terms differ where a setting differs: a policy moved away from the reference (a
nonzero k3 KL at beta 0.04), completions of different lengths and one cut at max_completion_length (per-sequence
means against a batch-wide token mean; a masked cut completion), advantages that differ within each group. The
model runs in float64; TRL's chunked LM head returns float32 log-probabilities, so loss and gradients agree to
float32 rounding (about 2e-7 of the largest gradient entry). With TRL 1.x's default `use_bias_correction_kl: true`
the loss is the same (the importance ratio is 1 on-policy) but the gradients are not (about 2e-2 apart): the case
that sets it asserts so, and the recipe's case fails where the recipe sets it. docs/fidelity.md (The loss) lists
every GRPOConfig field TRL added since 0.14 and why its value here is Med-R1's."""

import pytest
from conftest import REPO

from medr1.data.records import read_jsonl
from medr1.pipeline.recipes import recipe_names

RECIPE = "med-r1/qwen2-vl-2b-think"
# Two questions, 4 completions each: the rewards (accuracy, format) of each completion, differing within each group
ACCURACY = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
FORMAT = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
# where each completion's EOS goes (None: no EOS, cut at max_completion_length)
ENDS = [1, 6, None, 3, 0, 4, None, 2]
COMPLETION_LENGTH = 8


def accuracy(completions, **_):
    return ACCURACY[:len(completions)]


def format_(completions, **_):
    return FORMAT[:len(completions)]


def _recipe_train_params(tmp_path, name: str, **update):
    """params.yaml's train section after `medr1 recipe apply <name>`, on the CPU, with `update`'s changes."""
    import shutil

    from medr1.config import load_params
    from medr1.pipeline.recipes import apply_recipe

    params_file = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params_file)
    apply_recipe(name, params_file, REPO / "recipes")
    return load_params(params_file).train.model_copy(update={"device": "cpu", **update})


def _losses_and_gradients(tmp_path, processed, train) -> dict:
    """Med-R1's loss and ours, each with the gradient of every policy weight, on one batch."""
    import medr1_reference as reference
    import torch
    from test_grpo_trainer import _generation_batch, _trainer

    from medr1.synthetic.checkpoints import write_checkpoint
    from medr1.train.grpo_trainer import grpo_trainer_class
    from medr1.train.trl_config import grpo_config

    records = list(read_jsonl(processed / "train.jsonl"))
    folder = write_checkpoint("qwen2-vl", tmp_path / "model",
                              [r.question + " " + " ".join(r.options.values()) for r in records])
    config = grpo_config(train, tmp_path / "out")
    generations = config.num_generations
    trainer = _trainer(grpo_trainer_class(), folder, records, processed, tmp_path / "out", dtype=torch.float64,
                       reward_funcs=[accuracy, format_], config=config)
    with torch.no_grad():  # the policy a few updates away from the reference: the KL term is not 0
        noise = torch.Generator().manual_seed(1)
        for parameter in trainer.model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=noise, dtype=parameter.dtype))
    trainer.model.train()
    torch.manual_seed(0)
    # two questions about one picture: Med-R1's :403 pairs a prompt's completions with the batch's pictures in
    # turn, which is the same only when the batch has one picture (docs/fidelity.md, The loss)
    batch = trainer._generate_and_score_completions(_generation_batch(trainer, records, images=1))

    # completions of different lengths, as generation gives them (EOS, then padding); the reference's
    # log-probabilities again, as _generate_and_score_completions computes them
    eos, pad = trainer.processing_class.tokenizer.eos_token_id, trainer.processing_class.tokenizer.pad_token_id
    assert eos == trainer.eos_token_ids[0]  # Med-R1's end (processing_class.eos_token_id, :235) is TRL's first
    completion_ids = batch["completion_ids"].clone()
    assert completion_ids.shape == (len(ENDS), COMPLETION_LENGTH)
    completion_ids[torch.isin(completion_ids, torch.tensor([*trainer.eos_token_ids, pad]))] = 0  # ends: ours only
    completion_mask = torch.ones_like(batch["completion_mask"])
    for row, end in enumerate(ENDS):
        if end is not None:
            completion_ids[row, end], completion_ids[row, end + 1:], completion_mask[row, end + 1:] = eos, pad, 0
    batch["completion_ids"], batch["completion_mask"] = completion_ids, completion_mask
    ids = torch.cat([batch["prompt_ids"], completion_ids], dim=1)
    images = {key: batch.get(key) for key in ("pixel_values", "image_grid_thw", "num_images", "mm_token_type_ids")}
    with torch.no_grad():
        batch["ref_per_token_logps"], _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.ref_model, ids, torch.cat([batch["prompt_mask"], completion_mask], dim=1),
            completion_ids.size(1), batch_size=len(ENDS), **images)

    # Med-R1's inputs: one row and one picture per prompt, as its processor gave them (:365-377)
    pictures = batch["pixel_values"].split(batch["image_grid_thw"].prod(dim=1).tolist())
    prompt_pixel_values = torch.cat(pictures[::generations])
    rewards_per_func = torch.tensor([ACCURACY, FORMAT], dtype=torch.float32).T
    results = {}
    for name in ("medr1", "ours"):
        trainer.model.zero_grad()
        if name == "medr1":
            loss, advantages, kl, mask = reference.compute_loss_after_generation(
                trainer.model, trainer.ref_model, ids, batch["prompt_ids"].size(1),
                batch["prompt_mask"][::generations], prompt_pixel_values, batch["image_grid_thw"][::generations],
                rewards_per_func, eos, generations, trainer.args.beta, batch.get("mm_token_type_ids"))
            results.update(advantages=advantages, kl=kl, mask=mask)
        else:
            loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        results[name] = loss.detach(), {key: p.grad.clone() for key, p in trainer.model.named_parameters()}
    results["batch"], results["use_bias_correction_kl"] = batch, trainer.args.use_bias_correction_kl
    return results


def _gradient_difference(ours: dict, medr1: dict) -> float:
    """max |ours - Med-R1's| over every weight's gradient, relative to the largest entry of Med-R1's."""
    largest = max(grad.abs().max().item() for grad in medr1.values())
    return max((ours[name] - grad).abs().max().item() for name, grad in medr1.items()) / largest


@pytest.mark.parametrize("use_bias_correction_kl", [False, True], ids=["recipe", "trl-default"])
def test_the_loss_and_its_gradients_are_med_r1s(use_bias_correction_kl, tmp_path, processed):
    """The recipe's train.trl (use_bias_correction_kl: false, loss_type: grpo, scale_rewards: group and TRL's
    other defaults) gives Med-R1's loss and gradients; TRL 1.x's default bias-corrected KL does not."""
    import torch

    train = _recipe_train_params(tmp_path, RECIPE)
    assert train.trl["beta"] == 0.04  # the recipe's train.trl as applied (its values: the test below)
    trl = {**train.trl, "per_device_train_batch_size": len(ENDS), "gradient_accumulation_steps": 1,
           "max_completion_length": COMPLETION_LENGTH}
    if use_bias_correction_kl:
        trl["use_bias_correction_kl"] = True
    train = train.model_copy(update={"trl": trl})
    results = _losses_and_gradients(tmp_path, processed, train)
    batch, (medr1_loss, medr1_grads), (loss, grads) = results["batch"], results["medr1"], results["ours"]

    # the batch makes each term count: unequal lengths, a cut completion, a KL well above rounding, advantages
    assert (results["mask"] == batch["completion_mask"]).all()  # Med-R1's first-EOS rule gives the batch's mask
    assert sorted(set(batch["completion_mask"].sum(1).tolist())) == [1, 2, 3, 4, 5, 7, 8]
    per_sequence_kl = (results["kl"] * results["mask"]).sum(1) / results["mask"].sum(1)
    assert per_sequence_kl.min() > 1e-3
    torch.testing.assert_close(batch["advantages"], results["advantages"], rtol=1e-6, atol=1e-6)
    assert len(set(results["advantages"].tolist())) > 4

    difference = _gradient_difference(grads, medr1_grads)
    print(f"[medr1-loss] use_bias_correction_kl={results['use_bias_correction_kl']}: loss Med-R1 "
          f"{medr1_loss.item():.12f} ours {loss.item():.12f}, gradient max relative difference {difference:.3e}")
    # on-policy the ratio is 1: the loss is the same either way
    torch.testing.assert_close(loss.double(), medr1_loss, rtol=0, atol=1e-7)
    if use_bias_correction_kl:  # TRL 1.x's default: the KL term's gradient carries the ratio's, beta x KL x grad logp
        assert difference > 1e-3
    else:
        assert difference < 1e-5, "the gradients are not Med-R1's"


# Every GRPOConfig field TRL added since 0.14 that enters the loss or its gradient, at the value that is Med-R1's
# trainer (trainer/grpo_trainer.py at 88d76c7; docs/fidelity.md, The loss). The recipes set those whose TRL 1.16
# default differs (loss_type, use_bias_correction_kl) and leave the rest at TRL's default: this names them all, so a
# TRL whose default moves fails here.
MEDR1_LOSS_SETTINGS = {
    "loss_type": "grpo", "scale_rewards": "group", "use_bias_correction_kl": False,
    "multi_objective_aggregation": "sum_then_normalize", "importance_sampling_level": "token",
    "num_iterations": 1, "mask_truncated_completions": False, "top_entropy_quantile": 1.0, "entropy_coef": 0.0,
    "use_adaptive_entropy": False, "off_policy_mask_threshold": None, "delta": None, "sync_ref_model": False,
    "disable_dropout": False, "cast_lm_head_to_fp32": False, "router_aux_loss_coef": None, "use_vllm": False,
    "beta": 0.04, "temperature": 1.0,
}


@pytest.mark.parametrize("name", [name for name in recipe_names(REPO / "recipes") if name.startswith("med-r1/")])
def test_each_med_r1_recipe_builds_med_r1s_loss_settings(name, tmp_path):
    from medr1.train.trl_config import grpo_config

    config = grpo_config(_recipe_train_params(tmp_path, name), tmp_path / "out")
    assert {key: getattr(config, key) for key in MEDR1_LOSS_SETTINGS} == MEDR1_LOSS_SETTINGS
    # one generation per optimizer step: old log-probabilities are the policy's own, the ratio is 1 (Med-R1 has none)
    assert config.steps_per_generation == config.gradient_accumulation_steps
