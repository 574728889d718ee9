"""The GRPO trainer that does each step's distinct work once (medr1/train/grpo_trainer.py) against
TRL's own GRPOTrainer: the vision tower encodes each distinct image once per forward, the image
processor prepares each distinct picture once per step, and losses, log-probabilities, gradients and
a 40-step reward trajectory are TRL's.

The exactness test runs on the CPU in float64 and, on a CUDA GPU, in float32 (TF32 off) and bf16 under
sdpa and flash-attention, with LoRA and with gradient checkpointing; a few training steps run on CUDA
with LoRA, with gradient checkpointing and under DeepSpeed ZeRO-3 (benchmarks/gpu_check.sh runs them all).
The CUDA tests skip where no CUDA GPU is visible. Run as a script, this file trains a few steps under a
launcher (`few-steps`, below): the ZeRO-3 test starts it with `accelerate launch`."""

import contextlib
import copy
import functools
import glob
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, repo_params

from medr1.data.records import read_jsonl

PARAMS = repo_params()
GENERATIONS = 4
EXACTNESS_RECORD = "MEDR1_EXACTNESS_RECORD"  # a JSON-lines file each exactness run's measured errors are added to


@functools.cache
def _cuda() -> bool:
    """Asked when a CUDA test is about to run, never at collection; without NVIDIA's device files there is no
    CUDA GPU to ask torch about (importing it costs seconds: the CPU check skips these tests without it)."""
    if not glob.glob("/dev/nvidia*"):
        return False
    import torch

    return torch.cuda.is_available()


NEEDS_CUDA = pytest.mark.skipif("not _cuda()", reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these)")
NEEDS_FLASH_ATTN = pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None,
                                      reason="flash-attn is not installed")
NEEDS_DEEPSPEED = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="deepspeed is not installed")


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
             train_stage_weights=False, device="cpu", attention=None, peft_config=None, config=None, **settings):
    """`config`: a GRPOConfig built elsewhere (the train stage's `grpo_config`), used instead of one from `settings`."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig

    from medr1.model.hooks import apply_training_hook
    from medr1.task.rewards import reward_functions
    from medr1.task.spec import training_task
    from medr1.train.datasets import grpo_dataset

    params = PARAMS.train
    dtype = dtype or torch.float32
    if config is None:
        # activation_checkpointing off unless asked for, as the train stage sets it (TRL's GRPOConfig defaults it on)
        settings = {"max_steps": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 3 * GENERATIONS,
                    "num_generations": GENERATIONS, "max_completion_length": 6, "activation_checkpointing": False,
                    **settings}
        config = GRPOConfig(output_dir=str(output_dir), temperature=1.0, use_cpu=device == "cpu",
                            bf16=dtype == torch.bfloat16, report_to="none", save_strategy="no", seed=0,
                            logging_steps=1, **settings)
    model = AutoModelForImageTextToText.from_pretrained(
        folder, dtype=dtype, **({"attn_implementation": attention} if attention else {}))
    processor = AutoProcessor.from_pretrained(folder)
    if train_stage_weights:  # what the train stage trains: on the tiny model, the option words' embeddings
        apply_training_hook(model, processor.tokenizer, records)
    torch.manual_seed(0)  # TRL initialises LoRA adapters before Trainer seeds: both trainers get the same ones
    trainer = trainer_class(model=model, args=config, processing_class=processor, peft_config=peft_config,
                            reward_funcs=reward_funcs or reward_functions(params.reward_funcs, params.rewards,
                                                                          params.reasoning),
                            train_dataset=grpo_dataset(records, processed, training_task(params)))
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


@dataclass(frozen=True)
class Setting:
    """How both trainers run in an exactness test, and how close ours must come to TRL's there."""

    device: str
    dtype: str  # a torch dtype's name: the weights' and the computation's
    logps_atol: float  # |ours - TRL's| per-token log-probability (and loss), in nats, at most
    gradient_error: float  # |ours - TRL's| of each parameter's gradient, relative to TRL's largest entry, below
    same_completions: float  # the share of rows whose sampled completion is TRL's, at least
    attention: str = "sdpa"
    lora: bool = False
    checkpointing: bool = False
    pictures: int = 3  # one question about each and a second about the first, num_generations times each
    families: tuple[str, ...] = ("qwen2-vl", "qwen2.5-vl")


# float64: a different computation would be far off; summation order (TRL's LM-head kernel adds in float32 over
# however many rows it scores) leaves about 1.5e-7 of the gradients' bound.
CPU_FLOAT64 = {"device": "cpu", "dtype": "float64", "logps_atol": 1e-7, "gradient_error": 1e-6, "same_completions": 1}
# float32 with TF32 off: the kernels differ (3 prompt rows against 12, completions against a cache), each
# rounding at about 6e-8 relative; a wrong position or mask moves a random model's log-probabilities by 1e-2 or
# more. Not yet measured on a GPU: the run records the errors it saw (MEDR1_EXACTNESS_RECORD).
CUDA_FLOAT32 = {"device": "cuda", "dtype": "float32", "logps_atol": 1e-4, "gradient_error": 1e-3,
                "same_completions": 1}
# bf16 weights and activations round at 2**-8 (about 4e-3) relative, so two summation orders differ by a few
# units of that in the logits and gradients; sampling from logits that differ that little picks another token
# rarely, but a row that differs once differs from there on. Not yet measured on a GPU either.
CUDA_BF16 = {"device": "cuda", "dtype": "bfloat16", "logps_atol": 5e-2, "gradient_error": 5e-2,
             "same_completions": 0.75}
SETTINGS = [
    pytest.param(Setting(**CPU_FLOAT64), id="cpu-float64"),
    # two questions about one picture (8 rows), on the Qwen2-VL folder only, keep these in CI's time (about 6 s of
    # CPU each): a prompt and a picture are still shared, and on CUDA both families run them
    pytest.param(Setting(**CPU_FLOAT64, lora=True, pictures=1, families=("qwen2-vl",)), id="cpu-float64-lora"),
    pytest.param(Setting(**CPU_FLOAT64, checkpointing=True, pictures=1, families=("qwen2-vl",)),
                 id="cpu-float64-checkpointing"),
    pytest.param(Setting(**CUDA_FLOAT32), id="cuda-float32-sdpa", marks=NEEDS_CUDA),
    pytest.param(Setting(**CUDA_FLOAT32, lora=True), id="cuda-float32-sdpa-lora", marks=NEEDS_CUDA),
    pytest.param(Setting(**CUDA_FLOAT32, checkpointing=True), id="cuda-float32-sdpa-checkpointing",
                 marks=NEEDS_CUDA),
    pytest.param(Setting(**CUDA_BF16), id="cuda-bf16-sdpa", marks=NEEDS_CUDA),
    pytest.param(Setting(**CUDA_BF16, attention="flash_attention_2"), id="cuda-bf16-flash_attention_2",
                 marks=[NEEDS_CUDA, NEEDS_FLASH_ATTN]),
    pytest.param(Setting(**CUDA_BF16, attention="flash_attention_2", lora=True),
                 id="cuda-bf16-flash_attention_2-lora", marks=[NEEDS_CUDA, NEEDS_FLASH_ATTN]),
]


def _lora_config():
    """The train stage's LoRA targets, with adapters that change the output from the start (peft's default
    B = 0 would leave A's gradients zero on both sides) and no dropout (its masks would differ by row count)."""
    from peft import LoraConfig

    lora = PARAMS.train.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0, target_modules=lora.target_modules,
                      init_lora_weights=False, task_type="CAUSAL_LM")


@contextlib.contextmanager
def _tf32_off():
    """float32 matrix products and convolutions in full float32 on CUDA, as on the CPU."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _same_rows(ours, theirs) -> float:
    """The share of rows of two completion-id tensors that are equal (widths may differ when a row ended)."""
    import torch

    width = max(ours.shape[1], theirs.shape[1])
    ours, theirs = (torch.nn.functional.pad(ids, (0, width - ids.shape[1]), value=-1) for ids in (ours, theirs))
    return (ours == theirs).all(dim=1).float().mean().item()


def _record(measured: dict) -> None:
    """Print what an exactness run measured, and add it to $MEDR1_EXACTNESS_RECORD when that is set."""
    print(f"[exactness] {json.dumps(measured)}")
    if os.environ.get(EXACTNESS_RECORD):
        with open(os.environ[EXACTNESS_RECORD], "a") as stream:
            stream.write(json.dumps(measured) + "\n")


@pytest.mark.parametrize("setting", SETTINGS)
def test_losses_log_probabilities_and_gradients_are_trls(setting, real_folder, processed, tmp_path, request):
    """Same batch, same weights: TRL's trainer and ours give the same prompt inputs, completions,
    per-token log-probabilities, loss and gradients, the vision tower's included (every weight
    trains here, so gradients flow back through the shared image features; with LoRA, the adapters'),
    within the setting's tolerance: float64 on the CPU, float32 (TF32 off) and bf16 on CUDA."""
    import torch

    family = request.node.callspec.params["real_folder"]
    if family not in setting.families:
        pytest.skip(f"{request.node.callspec.id.removeprefix(family + '-')} runs on {' and '.join(setting.families)}")
    dtype = getattr(torch, setting.dtype)
    with _tf32_off() if setting.device == "cuda" else contextlib.nullcontext():
        trl_trainer, ours = _pair(real_folder, processed, tmp_path, dtype=dtype, device=setting.device,
                                  attention=setting.attention, peft_config=_lora_config() if setting.lora else None,
                                  activation_checkpointing=setting.checkpointing)
        for trainer in (trl_trainer, ours):
            assert trainer.model.device.type == setting.device
            if setting.checkpointing:  # what Trainer.train switches on before the first step
                trainer.model.activation_checkpointing_enable(
                    activation_checkpointing_kwargs=trainer.args.activation_checkpointing_kwargs)
            assert trainer.model.is_gradient_checkpointing == setting.checkpointing
        trainable = {name for name, parameter in ours.model.named_parameters() if parameter.requires_grad}
        trl_parameters = dict(trl_trainer.model.named_parameters())
        assert trainable == {name for name, parameter in trl_parameters.items() if parameter.requires_grad}
        for name, parameter in ours.model.named_parameters():  # LoRA: the same adapters on both sides
            assert torch.equal(parameter, trl_parameters[name]), name
        batches = {}
        for name, trainer in (("trl", trl_trainer), ("ours", ours)):
            trainer.model.train()
            torch.manual_seed(0)
            batches[name] = trainer._generate_and_score_completions(
                _generation_batch(trainer, real_folder[1], setting.pictures))
        for key in ("prompt_ids", "prompt_mask", "image_grid_thw", "pixel_values"):
            assert torch.equal(batches["trl"][key], batches["ours"][key]), key
        same_completions = _same_rows(batches["ours"]["completion_ids"], batches["trl"]["completion_ids"])
        batch = batches["trl"]  # advantages that differ per row: a random model's rewards are mostly equal
        advantages = batch["advantages"]  # TRL's own, for comparing ours' with below
        batch["advantages"] = torch.linspace(-1.0, 1.0, len(advantages), dtype=advantages.dtype,
                                             device=advantages.device)
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
    gradient_errors, vision_grads = {}, 0
    for name in sorted(trainable):  # relative to the largest: sums in another order
        grad, expected = dict(ours.model.named_parameters())[name].grad.double(), trl_parameters[name].grad.double()
        gradient_errors[name] = ((grad - expected).abs().max() / expected.abs().max().clamp(min=1e-12)).item()
        vision_grads += "visual" in name and bool(grad.abs().sum() > 0)
    worst = max(gradient_errors, key=gradient_errors.get)
    measured = {"setting": request.node.callspec.id,
                "device": torch.cuda.get_device_name() if setting.device == "cuda" else "cpu",
                "logps_max_abs_error": (logps["ours"] - logps["trl"]).abs().max().item(),
                "loss_abs_error": (logps["ours loss"] - logps["trl loss"]).abs().item(),
                "gradient_max_relative_error": gradient_errors[worst], "worst_gradient": worst,
                "same_completion_rows": same_completions, "rows": len(batch["completion_ids"])}
    _record(measured)
    assert same_completions >= setting.same_completions
    if setting.same_completions == 1:  # the same completions, so the same rewards
        torch.testing.assert_close(batches["ours"]["advantages"], advantages)
    torch.testing.assert_close(logps["ours"], logps["trl"], rtol=0, atol=setting.logps_atol)
    torch.testing.assert_close(logps["ours loss"], logps["trl loss"], rtol=0, atol=setting.logps_atol)
    assert measured["gradient_max_relative_error"] < setting.gradient_error, measured["worst_gradient"]
    if setting.lora:
        assert all("lora_" in name for name in trainable) and len(trainable) >= 8  # q, k, v, o: A and B, 2 layers
    else:
        assert vision_grads > 10  # the tower's weights got gradients through the shared features


def step_logs(trainer_name: str, model_dir, data, output_dir, **settings) -> list[dict]:
    """The log of each optimizer step (reward, loss, grad_norm, ...) of a short GRPO run from the model in
    `model_dir` on `data`'s train split, with our trainer ("ours") or TRL's ("trl"); `settings` as `_trainer`'s."""
    from trl import GRPOTrainer

    from medr1.train.grpo_trainer import DistinctWorkGRPOTrainer

    trainer_class = {"ours": DistinctWorkGRPOTrainer, "trl": GRPOTrainer}[trainer_name]
    trainer = _trainer(trainer_class, model_dir, list(read_jsonl(data / "train.jsonl")), data, output_dir, **settings)
    trainer.train()
    return [entry for entry in trainer.state.log_history if "reward" in entry]


def reward_trajectories(model_dir, data, steps: int = 40, reward_funcs=None) -> dict[str, list[float]]:
    """Per-step mean reward of `steps` GRPO steps (4 questions x 8 completions) from the model in
    `model_dir` on `data`'s train split, training the weights the train stage trains, with our
    trainer and with TRL's, from the same seed."""
    rewards = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in ("ours", "trl"):
            logs = step_logs(name, model_dir, data, Path(scratch) / name, max_steps=steps,
                             per_device_train_batch_size=32, num_generations=8, learning_rate=0.05,
                             max_completion_length=8, reward_funcs=reward_funcs, train_stage_weights=True)
            rewards[name] = [entry["reward"] for entry in logs]
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


def _letter_share_reward(completions, **_):
    """A reward that differs between almost any two random completions: the share of their characters that are
    letters (on the Qwen2-VL-shaped folders, 8 tokens are always 20 characters: `_length_reward` is 1 for all)."""
    texts = [completion[0]["content"] for completion in completions]
    return [sum(character.isalpha() for character in text) / max(len(text), 1) for text in texts]


# Three optimizer steps on CUDA in float32, every weight training: two micro-batches a step (TRL shuffles the
# generation batch before cutting it, so a micro-batch may hold a question's copies or not) and a reference
# model (beta), with a reward that varies within each group, so the advantages are not all 0. (With all of
# them 0, the first step's only gradient is the KL term's rounding noise: exactly 0 in TRL, and about 1e-8 in
# ours with gradient checkpointing while its policy pass ran full rows and its reference pass shared prompts,
# which Adam scaled into a full step; both now run full rows under checkpointing: test_trainer_patches.py.)
FEW_STEPS = {"device": "cuda", "max_steps": 3, "gradient_accumulation_steps": 2, "beta": 0.04,
             "max_completion_length": 8, "learning_rate": 1e-3, "reward_funcs": [_letter_share_reward]}
ZERO3 = ["--config_file", str(REPO / "infra/accelerate/deepspeed-zero3.yaml"), "--num_processes", "1",
         "--mixed_precision", "no"]  # one GPU: one process; float32, as the in-process runs


@NEEDS_CUDA
@pytest.mark.parametrize("path", ["lora", "checkpointing", pytest.param("deepspeed-zero3", marks=NEEDS_DEEPSPEED)])
def test_a_few_training_steps_on_cuda_are_trls(path, real_folder, processed, tmp_path, request):
    """A few steps from the same folder and seed with LoRA, with gradient checkpointing, and under DeepSpeed
    ZeRO-3 (started by `accelerate launch` as a user's run is): the per-step reward, loss and gradient norm of
    our trainer are TRL's (float32 with TF32 off: the same completions, losses to 1e-3 relative)."""
    folder, _ = real_folder
    if path == "deepspeed-zero3":
        if request.node.callspec.params["real_folder"] != "qwen2-vl":
            pytest.skip("ZeRO-3 runs on the Qwen2-VL folder only: its two launches take most of a minute")
        logs = {name: _launched_step_logs(name, folder, processed, tmp_path / name) for name in ("ours", "trl")}
    else:
        settings = {"peft_config": _lora_config()} if path == "lora" else {"activation_checkpointing": True}
        with _tf32_off():
            logs = {name: step_logs(name, folder, processed, tmp_path / name, **FEW_STEPS, **settings)
                    for name in ("ours", "trl")}

    def worst(key: str, scale: float) -> float:
        """The largest |ours - TRL's| of a logged value, relative to TRL's but never to less than `scale`
        (the first step's loss is 0: the advantages of a group sum to 0 and the policy is the reference)."""
        return max(abs(o[key] - t[key]) / max(abs(t[key]), scale) for o, t in zip(logs["ours"], logs["trl"],
                                                                                    strict=True))

    errors = {"reward_max_abs_error": worst("reward", 1), "loss_max_relative_error": worst("loss", 1e-3),
              "grad_norm_max_relative_error": worst("grad_norm", 1e-3)}
    _record({"setting": f"few-steps-{path}", "family": request.node.callspec.params["real_folder"],
             "steps": len(logs["ours"]), **errors, "grad_norms": [entry["grad_norm"] for entry in logs["ours"]]})
    assert len(logs["ours"]) == len(logs["trl"]) == FEW_STEPS["max_steps"]
    assert errors["reward_max_abs_error"] < 1e-6  # the same completions, so the same rewards
    assert errors["loss_max_relative_error"] < 1e-3 and errors["grad_norm_max_relative_error"] < 1e-3
    assert all(entry["grad_norm"] > 0 for entry in logs["ours"])  # the weights moved


def _launched_step_logs(trainer_name: str, folder: Path, data: Path, output_dir: Path) -> list[dict]:
    """`step_logs` with FEW_STEPS in a process of its own, started by `accelerate launch` with ZERO3."""
    from conftest import run

    output_dir.mkdir(parents=True)
    logs = output_dir / "logs.json"
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    run([sys.executable, "-m", "accelerate.commands.launch", *ZERO3, __file__, "few-steps", trainer_name, str(folder),
         str(data), str(logs)], REPO, env={"PYTHONPATH": path})
    return json.loads(logs.read_text())


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


def few_steps_main(trainer_name: str, folder: str, data: str, logs: str) -> None:
    """`step_logs` with FEW_STEPS under whatever launcher started this process; the main process writes them."""
    with _tf32_off():
        logged = step_logs(trainer_name, Path(folder), Path(data), Path(logs).parent / "run", **FEW_STEPS)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(logs).write_text(json.dumps(logged))


if __name__ == "__main__":  # python tests/test_grpo_trainer.py few-steps ours|trl FOLDER DATA LOGS_JSON
    if len(sys.argv) != 6 or sys.argv[1] != "few-steps":
        sys.exit(__doc__)
    few_steps_main(*sys.argv[2:])
