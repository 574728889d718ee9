"""The GRPO trainer that does each step's distinct work once (medr1/train/grpo_trainer.py) against
TRL's own GRPOTrainer: the vision tower encodes each distinct image once per forward, the image
processor prepares each distinct picture once per step, and losses, log-probabilities, gradients and
a 40-step reward trajectory are TRL's."""

import contextlib
import copy
import hashlib
import importlib
import inspect
import re
import tempfile
import types
from pathlib import Path

import pytest
from conftest import REPO, repo_params

from medr1.data.records import read_jsonl

PARAMS = repo_params()
GENERATIONS = 4


def test_the_trl_methods_it_overrides_or_relies_on_are_the_pinned_ones():
    """A TRL upgrade that changes any of them fails here until grpo_trainer.py is checked against it."""
    import trl
    from trl import GRPOTrainer

    from medr1.train.grpo_trainer import TRL_SOURCES, TRL_VERSION, DistinctWorkGRPOTrainer
    from medr1.train.lm_head import TRL_FUNCTIONS

    pinned = re.search(r"^trl==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE).group(1)
    assert trl.__version__ == TRL_VERSION == pinned
    for name, digest in TRL_SOURCES.items():
        assert hashlib.sha256(inspect.getsource(getattr(GRPOTrainer, name)).encode()).hexdigest() == digest, name
    for dotted, digest in TRL_FUNCTIONS.items():
        module, name = dotted.rsplit(".", 1)
        source = inspect.getsource(getattr(importlib.import_module(module), name))
        assert hashlib.sha256(source.encode()).hexdigest() == digest, dotted
    overridden = {name for name in vars(DistinctWorkGRPOTrainer) if callable(getattr(GRPOTrainer, name, None))}
    assert overridden - {"__init__"} <= set(TRL_SOURCES)


@pytest.fixture(scope="module", params=["qwen2-vl", "qwen2.5-vl"])
def real_folder(request, tmp_path_factory, processed):
    """A randomly initialised Qwen2-VL (and Qwen2.5-VL) checkpoint folder as a download has it (real
    BPE tokenizer, chat template, image processor)."""
    from medr1.synthetic.checkpoints import write_checkpoint

    records = list(read_jsonl(processed / "train.jsonl"))
    texts = [r.question + " " + " ".join(r.options.values()) for r in records]
    return write_checkpoint(request.param, tmp_path_factory.mktemp(request.param), texts), records


def _trainer(trainer_class, folder, records, processed, output_dir, dtype=None, reward_funcs=None,
             train_stage_weights=False, **settings):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig

    from medr1.model.hooks import apply_training_hook
    from medr1.task.rewards import reward_functions
    from medr1.train.datasets import grpo_dataset

    params = PARAMS.train
    settings = {"max_steps": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 3 * GENERATIONS,
                "num_generations": GENERATIONS, "max_completion_length": 6, **settings}
    config = GRPOConfig(output_dir=str(output_dir), temperature=1.0, use_cpu=True, report_to="none",
                        save_strategy="no", seed=0, logging_steps=1, **settings)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype or torch.float32)
    processor = AutoProcessor.from_pretrained(folder)
    if train_stage_weights:  # what the train stage trains: on the tiny model, the option words' embeddings
        apply_training_hook(model, processor.tokenizer, records)
    trainer = trainer_class(model=model, args=config, processing_class=processor,
                            reward_funcs=reward_funcs or reward_functions(params.reward_funcs, params.rewards,
                                                                          params.reasoning),
                            train_dataset=grpo_dataset(records, processed, params.reasoning))
    trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets before a step
    return trainer


def _generation_batch(trainer, records, images: int) -> list[dict]:
    """What the trainer's dataloader yields, each question num_generations times and decoded each time,
    for one question about each of `images` pictures and a second question about the first picture."""
    first = {}
    for index, record in enumerate(records):
        first.setdefault(record.image, []).append(index)
    groups = list(first.values())
    chosen = [indices[0] for indices in groups[:images]] + [groups[0][1]]
    return [trainer.train_dataset[index] for index in chosen for _ in range(GENERATIONS)]


def _pair(real_folder, processed, tmp_path, **settings):
    from trl import GRPOTrainer

    from medr1.train.grpo_trainer import DistinctWorkGRPOTrainer

    folder, records = real_folder
    return (_trainer(GRPOTrainer, folder, records, processed, tmp_path / "trl", **settings),
            _trainer(DistinctWorkGRPOTrainer, folder, records, processed, tmp_path / "ours", **settings))


def _count_encodings(model) -> list[list[int]]:
    """Per call of the model's vision tower: [pixel rows its caller passed, pixel rows it encoded]."""
    from medr1.train.distinct_images import vision_tower

    tower, calls = vision_tower(model), []
    tower.register_forward_pre_hook(lambda module, args, kwargs: calls.append([args[0].shape[0], None]),
                                    with_kwargs=True, prepend=True)  # runs before the trainer's hooks
    tower.patch_embed.register_forward_pre_hook(lambda module, args: calls[-1].__setitem__(1, args[0].shape[0]))
    return calls


def _count_language_rows(model) -> list[tuple[int, int]]:
    """Per call of the model's language model: (rows, tokens) of what it ran."""
    calls = []
    model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(tuple(kwargs["inputs_embeds"].shape[:2])), with_kwargs=True)
    return calls


def _count_scored_positions(monkeypatch) -> list[int]:
    """Per log-probability pass: the positions TRL's fused LM head scores."""
    import trl.trainer.utils as trl_utils

    scored, kernel = [], trl_utils._ChunkedLogProbFunction
    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", types.SimpleNamespace(
        apply=lambda hidden, *args: (scored.append(hidden.shape[0]), kernel.apply(hidden, *args))[1]))
    return scored


def test_each_distinct_image_is_encoded_once_per_forward_and_processed_once_per_step(real_folder, processed,
                                                                                    tmp_path, monkeypatch):
    """With a reference model (beta) and two optimizer steps per batch (old-policy log-probs), a step
    runs the tower in generation's prefill and in the old-policy, reference and policy forwards:
    TRL encodes every copy each time, ours each distinct image once. On the CPU, TRL's LM head scores
    every position of every row, ours the completions' only."""
    trl_trainer, ours = _pair(real_folder, processed, tmp_path, beta=0.04, num_iterations=2)
    scored = _count_scored_positions(monkeypatch)
    processed_images = []
    image_processor_class = type(ours.processing_class.image_processor)
    real_call = image_processor_class.__call__
    monkeypatch.setattr(image_processor_class, "__call__", lambda self, images, *args, **kwargs: (
        processed_images.append(len(images)), real_call(self, images, *args, **kwargs))[1])
    results = {}
    for name, trainer in (("trl", trl_trainer), ("ours", ours)):
        calls = _count_encodings(trainer.model)
        ref_calls = _count_encodings(trainer.ref_model)
        language_rows = _count_language_rows(trainer.model)
        processed_images.clear()
        scored.clear()
        trainer.model.train()
        rows = _generation_batch(trainer, real_folder[1], images=2)
        batch = trainer._generate_and_score_completions(rows)
        trainer.compute_loss(trainer.model, batch).backward()
        results[name] = (calls, ref_calls, list(processed_images), language_rows)
        results[name + " scored"] = (list(scored), batch)
    distinct = 2  # three questions about two pictures, each num_generations times
    trl_calls, trl_ref, trl_processed, trl_language = results["trl"]
    calls, ref_calls, processed_images, language = results["ours"]
    assert len(trl_calls) == 3 and len(trl_ref) == 1  # prefill, old policy, policy; reference
    assert all(given == encoded for given, encoded in trl_calls + trl_ref)  # every copy encoded
    assert len(calls) == 3 and len(ref_calls) == 1
    patches = trl_calls[0][0] // (3 * GENERATIONS)  # pixel rows of one picture
    assert all(encoded == distinct * patches for _, encoded in calls + ref_calls)  # each picture once a forward
    assert sum(trl_processed) == 2 * 3 * GENERATIONS  # TRL: every copy, in each of its two passes
    assert sum(processed_images) == distinct  # ours: each picture once a step
    prompt_tokens = batch["prompt_ids"].shape[1]
    assert trl_language[0] == (3 * GENERATIONS, prompt_tokens)  # generation's prefill: every copy of the prompts
    assert language[0] == (3, prompt_tokens)  # ours: each distinct prompt once
    assert language[1][0] == 3 * GENERATIONS  # decoding continues on every row
    for name, every_position in (("trl", True), ("ours", False)):
        passes, batch = results[name + " scored"]
        rows, completion = batch["completion_ids"].shape
        length = batch["prompt_ids"].shape[1] + completion
        expected = rows * (length - 1) if every_position else int(batch["completion_mask"].sum())
        assert passes == [expected] * 3, name  # old policy, reference, policy


def test_losses_log_probabilities_and_gradients_are_trls(real_folder, processed, tmp_path):
    """Same batch, same weights: TRL's trainer and ours give the same prompt inputs, completions,
    per-token log-probabilities, loss and gradients, the vision tower's included (every weight
    trains here, so gradients flow back through the shared image features)."""
    import torch

    trl_trainer, ours = _pair(real_folder, processed, tmp_path, dtype=torch.float64)  # rounding out of the way
    batches = {}
    for name, trainer in (("trl", trl_trainer), ("ours", ours)):
        trainer.model.train()
        torch.manual_seed(0)
        batches[name] = trainer._generate_and_score_completions(_generation_batch(trainer, real_folder[1], 3))
    for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "image_grid_thw"):
        assert torch.equal(batches["trl"][key], batches["ours"][key]), key
    assert torch.equal(batches["trl"]["pixel_values"], batches["ours"]["pixel_values"])
    torch.testing.assert_close(batches["trl"]["advantages"], batches["ours"]["advantages"])
    batch = batches["trl"]  # advantages that differ per row: a random model's rewards are mostly equal
    batch["advantages"] = torch.linspace(-1.0, 1.0, len(batch["advantages"]))
    logps = {}
    for name, trainer in (("trl", trl_trainer), ("ours", ours)):
        trainer.model.zero_grad()
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        logps[name], _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, batch["completion_ids"].size(1), pixel_values=batch["pixel_values"],
            image_grid_thw=batch["image_grid_thw"], num_images=batch["num_images"],
            mm_token_type_ids=batch.get("mm_token_type_ids"))
        loss = trainer.compute_loss(trainer.model, copy.copy(batch))
        loss.backward()
        logps[name + " loss"] = loss.detach()
    torch.testing.assert_close(logps["ours"], logps["trl"])
    torch.testing.assert_close(logps["ours loss"], logps["trl loss"])
    trl_grads = dict(trl_trainer.model.named_parameters())
    vision_grads = 0
    for name, parameter in ours.model.named_parameters():  # relative to the largest: sums in another order
        expected = trl_grads[name].grad
        error = (parameter.grad - expected).abs().max() / expected.abs().max().clamp(min=1e-12)
        # float64: a different computation would be far off; summation order (TRL's LM-head kernel adds
        # in float32 over however many rows it scores) leaves about 1.5e-7 here
        assert error < 1e-6, (name, float(error))
        vision_grads += "visual" in name and bool(parameter.grad.abs().sum() > 0)
    assert vision_grads > 10  # the tower's weights got gradients through the shared features


def reward_trajectories(model_dir, data, steps: int = 40, reward_funcs=None) -> dict[str, list[float]]:
    """Per-step mean reward of `steps` GRPO steps (4 questions x 8 completions) from the model in
    `model_dir` on `data`'s train split, training the weights the train stage trains, with our
    trainer and with TRL's, from the same seed."""
    from trl import GRPOTrainer

    from medr1.train.grpo_trainer import DistinctWorkGRPOTrainer

    records = list(read_jsonl(data / "train.jsonl"))
    rewards = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, trainer_class in (("ours", DistinctWorkGRPOTrainer), ("trl", GRPOTrainer)):
            trainer = _trainer(trainer_class, model_dir, records, data, Path(scratch) / name, max_steps=steps,
                               per_device_train_batch_size=32, num_generations=8, learning_rate=0.05,
                               max_completion_length=8, reward_funcs=reward_funcs, train_stage_weights=True)
            trainer.train()
            rewards[name] = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    return rewards


def _length_reward(completions, **_):
    """A reward an untrained model earns in varying amounts: how much of its completion is text."""
    return [min(len(completion[0]["content"].strip()), 20) / 20 for completion in completions]


def test_a_40_step_reward_trajectory_is_trls_with_the_same_seed(processed, tmp_path):
    """40 steps from the same tiny model and seed: our trainer's per-step rewards are TRL's."""
    from conftest import write_untrained_tiny

    write_untrained_tiny(tmp_path, list(read_jsonl(processed / "train.jsonl")), training_hook=True)
    rewards = reward_trajectories(tmp_path, processed, reward_funcs=[_length_reward])
    assert len(rewards["ours"]) == 40
    assert rewards["ours"] == pytest.approx(rewards["trl"], abs=1e-6)
    assert len(set(rewards["ours"])) > 5  # the reward moved: a trajectory, not a constant


def test_on_the_cpu_the_lm_head_scores_the_labelled_positions_only_with_the_same_results(real_folder, monkeypatch):
    """What the GRPO passes and the SFT stage run TRL's fused LM head in: the completions' positions
    scored, the same log-probabilities, entropies, loss and gradients as TRL's every-position path, and
    TRL's own setting back afterwards, also after an error."""
    import torch
    import trl.trainer.utils as trl_utils
    from transformers import AutoModelForImageTextToText
    from trl.trainer.utils import add_fused_lm_head

    from medr1.train.lm_head import completion_positions_scored

    model = AutoModelForImageTextToText.from_pretrained(real_folder[0], dtype=torch.float64)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    input_ids = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = input_ids.clone()
    labels[:, :9] = -100  # a 9-token prompt, 3 completion tokens
    labels[1, -1] = -100  # and padding after the second row's end
    scored = _count_scored_positions(monkeypatch)
    trl_setting = trl_utils._use_triton
    results = []
    for compact in (False, True):
        model.zero_grad()
        with completion_positions_scored() if compact else contextlib.nullcontext():
            output = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
        output.loss.backward()
        results.append((output, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}))
    (every, every_grads), (ours, grads) = results
    assert scored == [2 * 11, 5]
    for field in ("log_probs", "entropy", "loss"):
        torch.testing.assert_close(getattr(ours, field), getattr(every, field))
    assert grads.keys() == every_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, every_grads[name], msg=name)
    assert (ours.log_probs[:, :8] == 0).all() and (ours.log_probs[:, 8:10] != 0).all()
    assert trl_utils._use_triton is trl_setting
    with pytest.raises(RuntimeError), completion_positions_scored(), completion_positions_scored():
        raise RuntimeError("a failed step")
    assert trl_utils._use_triton is trl_setting


def test_images_alike_in_every_sampled_value_but_one_are_kept_apart():
    """Fingerprints only group candidates: an exact comparison decides which images are one."""
    import torch

    from medr1.train.distinct_images import find_distinct_blocks

    picture = torch.rand(64, 1176)
    nearly = picture.clone()
    nearly[0, 1] += 1.0  # off the fingerprint's stride: the same fingerprint, other pixels
    found = find_distinct_blocks([picture, nearly, picture.clone(), nearly.clone()], [(1, 8, 8)] * 4)
    assert (found.keep, found.inverse) == ([0, 1], [0, 1, 0, 1])
    assert find_distinct_blocks([picture, nearly], [(1, 8, 8)] * 2) is None
