"""What a GRPO run will hold on each GPU, worked out from params.yaml, the launcher and the base
model's config.json before any GPU is used (`medr1 plan`, and the train stage's first line).

The parameters are counted on the meta device (the model built from its config, no weights). Each
share of memory is a formula over the recipe's sizes, shown beside its number:

- persistent: the policy's weights, the optimizer's state and the reference model (beta > 0);
- the training pass (one micro-batch of per_device_train_batch_size rows, forward and backward):
  gradients, the activations kept for the backward and the completions' scores;
- generation (no gradients exist then: the Trainer drops them after each optimizer step): the
  key-value cache of the whole generation batch, and one micro-batch's scores.

The estimate is persistent + the larger of the other two; what it leaves out (LEAVES_OUT) is
printed with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medr1.config import Params
from medr1.train.budget import questions_per_step, steps_per_epoch, steps_per_generation
from medr1.train.launch_plan import Launch, launch_of
from medr1.train.model_sizes import Architecture, architecture_of, image_tokens
from medr1.train.trl_config import trl_settings

GIB = 2**30
TEXT_TOKENS = 128  # a prompt's words besides its image: Med-R1's template, question, options, chat template
DEEPSPEED_REDUCE_BUCKET = 500_000_000  # DeepSpeed's default reduce_bucket_size, in elements
LEAVES_OUT = ("the CUDA context and PyTorch's allocator (reserved above allocated, fragmentation: often 1-3 GiB), "
              "NCCL buffers, ZeRO-3's gathered layers and prefetch, vLLM's share of the GPU (train.trl.use_vllm), "
              "kernels' workspaces, the optimizer step's temporaries, pixel values; prompts longer than the "
              "estimate (the longest prompt sets a micro-batch's length: the train stage logs it)")


@dataclass(frozen=True)
class Share:
    name: str
    size: float  # bytes
    how: str


@dataclass(frozen=True)
class MemoryPlan:
    device: str
    launch: Launch
    architecture: Architecture
    persistent: list[Share]
    training_pass: list[Share]
    generation: list[Share]
    prompt_tokens: int
    questions_per_step: float
    questions: int | None  # in the train split, when known
    steps_per_epoch: int | None
    caution: str | None  # bf16 weights that AdamW updates in bf16: most steps of a small learning rate round away

    @property
    def estimate(self) -> float:
        return sum(share.size for share in self.persistent) + max(
            sum(share.size for share in self.training_pass), sum(share.size for share in self.generation))


def memory_plan(params: Params, model_folder: Path, device: str, questions: int | None = None,
                prompt_tokens: int | None = None, root: Path = Path(".")) -> MemoryPlan:
    """The per-GPU (on the CPU: per-process) estimate for `params` on `device` ("cuda" or "cpu").
    `prompt_tokens` defaults to an ingest.image_size picture's tokens + TEXT_TOKENS, within
    train.max_prompt_length; `questions` is the train split's size, for the steps per epoch."""
    train = params.train
    launch = launch_of(train.launcher, root)
    model = architecture_of(model_folder, params)
    pictures = image_tokens(params.ingest.image_size, params, model)
    if prompt_tokens is None:
        prompt_tokens = pictures + TEXT_TOKENS
        if train.max_prompt_length is not None:
            prompt_tokens = min(prompt_tokens, train.max_prompt_length)
    epoch = None if questions is None else steps_per_epoch(train, launch.processes, questions)
    sizes = _Sizes(params, launch, model, device, prompt_tokens, pictures, steps_per_generation(train))
    return MemoryPlan(device=device, launch=launch, architecture=model, persistent=sizes.persistent(),
                      training_pass=sizes.training_pass(), generation=sizes.generation(),
                      prompt_tokens=prompt_tokens, questions_per_step=questions_per_step(train, launch.processes),
                      questions=questions, caution=sizes.caution(),
                      steps_per_epoch=epoch)


class _Sizes:
    """The shares' formulas. Bytes a value: bf16 2, float32 4."""

    def __init__(self, params: Params, launch: Launch, model: Architecture, device: str, prompt_tokens: int,
                 pictures: int, steps_per_generation: int):
        from medr1.model.loading import resolve_weights_dtype

        self.train, self.launch, self.model = params.train, launch, model
        self.grpo = trl_settings(params.train)  # GRPOConfig's settings: train.trl's, else TRL's defaults
        self.prompt_tokens, self.pictures, self.steps_per_generation = prompt_tokens, pictures, steps_per_generation
        self.deepspeed = launch.zero_stage is not None
        bf16 = device == "cuda"  # the TrainingArguments' bf16 (medr1/train/trl_config.py), DeepSpeed's too
        weights_bf16 = str(resolve_weights_dtype(self.train.weights_dtype, device)) == "torch.bfloat16"
        self.weight_bytes = 2 if (bf16 if self.deepspeed else weights_bf16) else 4
        self.value_bytes = 2 if bf16 else 4  # activations: bf16 compute on CUDA
        self.rows = self.grpo.per_device_train_batch_size
        self.tokens = prompt_tokens + self.grpo.max_completion_length
        self.reference = self.grpo.beta != 0 and not self.train.lora.enabled  # TRL builds one only then

    def _sharded(self, stage: int) -> tuple[int, str]:
        """The divisor and its words for state ZeRO shards from `stage` on."""
        n = self.launch.processes
        if (self.launch.zero_stage or 0) < stage:
            return 1, ""
        return n, f" / {n} GPUs (ZeRO-{self.launch.zero_stage})"

    def caution(self) -> str | None:
        """Without DeepSpeed's float32 master weights, bf16 weights take AdamW's steps in bf16: a step of about
        the learning rate is lost to rounding on every weight above 256 x lr in magnitude."""
        if self.deepspeed or self.train.lora.enabled or self.weight_bytes == 4:
            return None
        lr = self.grpo.learning_rate
        return (f"bf16 weights without DeepSpeed: AdamW's steps of about lr {lr:g} round away on every weight above "
                f"{256 * lr:.1e} in magnitude (most of a trained model's); train.weights_dtype: float32, or a ZeRO "
                "launcher (float32 master weights), keeps them (docs/gpu-training.md, Memory)")

    def persistent(self) -> list[Share]:
        m, w, lora = self.model, self.weight_bytes, self.train.lora.enabled
        shards, words = self._sharded(3)
        dtype = "bf16" if w == 2 else "float32"
        shares = [Share("weights", m.parameters * w / shards, f"{m.parameters:,} parameters x {w} B ({dtype}){words}")]
        if lora:
            shares.append(Share("LoRA adapters", m.trainable * 4, f"{m.trainable:,} parameters x 4 B (float32)"))
        shards, words = self._sharded(1)
        if self.deepspeed:
            optimizer = Share("optimizer", m.trainable * 12 / shards, f"{m.trainable:,} trained x (4 B float32 "
                              f"master weights + 8 B AdamW moments){words}")
        else:
            state = 4 if lora else w
            optimizer = Share("optimizer", m.trainable * 2 * state, f"{m.trainable:,} trained x 2 AdamW moments x "
                              f"{state} B (torch's AdamW keeps them in the parameters' dtype)")
        shares.append(optimizer)
        if self.reference:
            shards, words = self._sharded(3)
            shares.append(Share("reference model", m.parameters * w / shards,
                                f"{m.parameters:,} x {w} B (beta {self.grpo.beta}; TRL builds it in the policy's "
                                f"dtype){words}"))
        return shares

    def training_pass(self) -> list[Share]:
        m, a, rows, tokens = self.model, self.value_bytes, self.rows, self.tokens
        gradient_bytes = 4 if self.train.lora.enabled else self.weight_bytes
        shards, words = self._sharded(2)
        shares = [Share("gradients", m.trainable * gradient_bytes / shards,
                        f"{m.trainable:,} x {gradient_bytes} B{words}")]
        if self.deepspeed:
            bucket = min(DEEPSPEED_REDUCE_BUCKET, m.trainable)
            shares.append(Share("reduce bucket", bucket * gradient_bytes,
                                f"{bucket:,} x {gradient_bytes} B (DeepSpeed's default reduce_bucket_size)"))
        elif self.launch.processes > 1:
            shares.append(Share("DDP buckets", m.trainable * gradient_bytes,
                                f"{m.trainable:,} x {gradient_bytes} B (a copy of the gradients to all-reduce)"))
        layer = 8 * m.hidden + 2 * m.kv_width + 4 * m.intermediate
        shares.append(self._stacked_activations(
            "activations, language model", f"{rows} rows x {tokens} tokens", rows * tokens, m.layers, "layer",
            m.hidden, self.weight_bytes, layer, f"(8 x {m.hidden} + 2 x {m.kv_width} + 4 x {m.intermediate}) values"))
        patches = self.pictures * m.merge**2
        wide = 4 if m.vision_gated else 2
        shares.append(self._stacked_activations(
            "activations, vision tower", f"up to {rows} pictures x {patches} patches", rows * patches, m.vision_depth,
            "block", m.vision_hidden, a, 10 * m.vision_hidden + wide * m.vision_intermediate,
            f"(10 x {m.vision_hidden} + {wide} x {m.vision_intermediate})"))
        scored = self.grpo.max_completion_length + 1
        shares.append(Share("completion scores", 2 * rows * scored * m.vocab * a,
                            f"2 (logits, log-softmax) x {rows} rows x {scored} positions x {m.vocab:,} x {a} B"))
        return shares

    def _stacked_activations(self, name: str, items: str, count: int, depth: int, unit: str, kept: int,
                             kept_bytes: int, per_unit: int, formula: str) -> Share:
        """A stack of `depth` layers (blocks) over `count` positions: every layer's `per_unit` values kept for the
        backward, or under gradient checkpointing each layer's input (`kept` values of `kept_bytes`) and one
        layer's values, recomputed."""
        a = self.value_bytes
        if self.grpo.activation_checkpointing:
            return Share(name, count * (depth * kept * kept_bytes + per_unit * a),
                         f"{items} x ({depth} {unit}s x {kept} x {kept_bytes} B + one {unit}'s {formula} x {a} B): "
                         "gradient checkpointing")
        return Share(name, count * depth * per_unit * a, f"{items} x {depth} {unit}s x {formula} x {a} B")

    def generation(self) -> list[Share]:
        m, a = self.model, self.value_bytes
        rows = self.rows * self.steps_per_generation
        scored = self.grpo.max_completion_length + 1
        return [
            Share("key-value cache", rows * self.tokens * m.layers * 2 * m.kv_width * a,
                  f"{rows} rows (the process's generation batch) x {self.tokens} tokens x {m.layers} layers x 2 x "
                  f"{m.kv_width} x {a} B"),
            Share("scores, no gradient", self.rows * scored * m.vocab * a,
                  f"{self.rows} rows x {scored} positions x {m.vocab:,} x {a} B (old policy, reference)"),
        ]


def planned_device(device: str) -> str:
    """train.device for planning: cuda is taken at its word (the plan may run on another machine than
    the training), auto is what this machine has."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def stage_line(params: Params, model_folder: Path, device: str, questions: int | None) -> str:
    """The train stage's first line: the plan's summary (and its caution, when there is one, on a
    second). A model whose config the estimate does not know gets a line saying so; a log line never
    stops a training run."""
    try:
        plan = memory_plan(params, model_folder, device, questions)
    except Exception as error:  # noqa: BLE001 - a log line: whatever the estimate stumbles on, training goes on
        reason = str(error).splitlines()[0] if str(error) else ""
        return f"[train] plan: no estimate for {model_folder} ({type(error).__name__}: {reason}); training goes on"
    return summary_line(plan) + ("" if plan.caution is None else f"\n[train] caution: {plan.caution}")


def summary_line(plan: MemoryPlan) -> str:
    """The plan in one line."""
    where = "GPU" if plan.device == "cuda" else "process (host memory)"
    shares = [*plan.persistent, *plan.training_pass, *plan.generation]
    parts = ", ".join(f"{share.name} {size_text(share.size)}" for share in shares)
    epoch = "" if plan.steps_per_epoch is None else f", {plan.steps_per_epoch:,} steps an epoch"
    return (f"[train] plan: {plan.launch.description}: about {size_text(plan.estimate)} per {where} ({parts}; "
            f"`medr1 plan` shows the formulas); {plan.questions_per_step:g} question(s) a step{epoch}")


def size_text(size: float) -> str:
    """Bytes in GiB, or MiB below a tenth of one (the tiny model's)."""
    return f"{size / GIB:.1f} GiB" if size >= GIB / 10 else f"{size / 2**20:.1f} MiB"


def train_split_size(path: Path) -> int | None:
    """Questions in a train split (JSONL), None when it is not there yet."""
    try:
        with path.open() as lines:
            return sum(1 for line in lines if line.strip())
    except FileNotFoundError:
        return None

