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

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from medr1.config import Params, launcher_command

GIB = 2**30
TEXT_TOKENS = 128  # a prompt's words besides its image: Med-R1's template, question, options, chat template
DEEPSPEED_REDUCE_BUCKET = 500_000_000  # DeepSpeed's default reduce_bucket_size, in elements
LEAVES_OUT = ("the CUDA context and PyTorch's allocator (reserved above allocated, fragmentation: often 1-3 GiB), "
              "NCCL buffers, ZeRO-3's gathered layers and prefetch, vLLM's share of the GPU (train.use_vllm), "
              "kernels' workspaces, the optimizer step's temporaries, pixel values; prompts longer than the "
              "estimate (the longest prompt sets a micro-batch's length: the train stage logs it)")


@dataclass(frozen=True)
class Launch:
    """How many processes train, and how DeepSpeed shards their state."""

    processes: int  # in the whole run, every machine's
    zero_stage: int | None  # None: no DeepSpeed
    description: str


@dataclass(frozen=True)
class Architecture:
    """The sizes the estimate needs, read from a model built on the meta device."""

    parameters: int
    vision_parameters: int
    trainable: int  # all of them, or LoRA's adapters
    hidden: int
    layers: int
    kv_width: int  # key/value heads x head size
    intermediate: int
    vocab: int
    vision_hidden: int
    vision_depth: int
    vision_intermediate: int
    vision_gated: bool  # Qwen2.5-VL's SwiGLU vision MLP (three projections) or Qwen2-VL's two
    merge: int  # patches merged into one image token, per side


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


def launch_of(launcher: str, root: Path = Path(".")) -> Launch:
    """train.launcher as processes and ZeRO stage (an accelerate config file is read from `root`)."""
    words = launcher_command(launcher)
    if words[0] in ("python", "python3"):
        return Launch(1, None, "one process (python)")
    program = "accelerate launch" if words[0] == "accelerate" else words[0]
    options = _options(words[len(program.split()):])
    if program == "torchrun":
        per_node = int(options.get("--nproc_per_node") or options.get("--nproc-per-node") or 1)
        nodes = int(options.get("--nnodes") or 1)
        return Launch(per_node * nodes, None, f"torchrun, {nodes} node(s) x {per_node} process(es), DDP")
    config = yaml.safe_load((root / options["--config_file"]).read_text()) if "--config_file" in options else {}
    processes = int(options.get("--num_processes") or config.get("num_processes") or 1)  # accelerate's: in all
    deepspeed = config.get("distributed_type") == "DEEPSPEED"
    zero = int(config.get("deepspeed_config", {}).get("zero_stage", 0)) if deepspeed else None
    kind = f"DeepSpeed ZeRO-{zero}" if deepspeed else "DDP" if processes > 1 else "one process"
    return Launch(processes, zero, f"accelerate launch {options.get('--config_file', '(no config file)')}, "
                                   f"{processes} process(es), {kind}")


def _options(words: list[str]) -> dict[str, str]:
    options, rest = {}, list(words)
    while rest:
        name, _, value = rest.pop(0).partition("=")
        if not value and name != "--standalone" and rest:
            value = rest.pop(0)
        options[name] = value
    return options


def architecture_of(folder: Path, params: Params) -> Architecture:
    """The model in `folder` (its config.json only) built on the meta device and measured."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    parameters = sum(p.numel() for p in model.parameters())
    vision_parameters = sum(p.numel() for name, p in model.named_parameters() if ".visual." in f".{name}")
    lora = params.train.lora
    trainable = parameters if not lora.enabled else sum(  # peft's rule: a Linear whose name ends in a target
        lora.r * (module.in_features + module.out_features) for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in lora.target_modules)
    text, vision = config.get_text_config(), config.vision_config
    vision_hidden = getattr(vision, "embed_dim", None) or vision.hidden_size  # Qwen2-VL's name, Qwen2.5-VL's
    vision_intermediate = getattr(vision, "intermediate_size", None) or vision_hidden * vision.mlp_ratio
    heads = text.num_attention_heads
    head_size = getattr(text, "head_dim", None) or text.hidden_size // heads
    return Architecture(parameters=parameters, vision_parameters=vision_parameters, trainable=trainable,
                        hidden=text.hidden_size, layers=text.num_hidden_layers,
                        kv_width=text.num_key_value_heads * head_size, intermediate=text.intermediate_size,
                        vocab=text.vocab_size, vision_hidden=vision_hidden, vision_depth=vision.depth,
                        vision_intermediate=vision_intermediate,
                        vision_gated=hasattr(vision, "intermediate_size"), merge=vision.spatial_merge_size)


def image_tokens(image_side: int, params: Params, merge: int) -> int:
    """Tokens of one image_side x image_side picture after the training processor's resize
    (Qwen2-VL's smart_resize within train.min_pixels and train.max_pixels)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    factor = 14 * merge
    train = params.train
    limits = (train.min_pixels, train.max_pixels) if train.max_pixels is not None else (3136, 12845056)
    height, width = smart_resize(image_side, image_side, factor=factor, min_pixels=limits[0], max_pixels=limits[1])
    return (height // factor) * (width // factor)


def memory_plan(params: Params, model_folder: Path, device: str, questions: int | None = None,
                prompt_tokens: int | None = None, root: Path = Path(".")) -> MemoryPlan:
    """The per-GPU (on the CPU: per-process) estimate for `params` on `device` ("cuda" or "cpu").
    `prompt_tokens` defaults to an ingest.image_size picture's tokens + TEXT_TOKENS, within
    train.max_prompt_length; `questions` is the train split's size, for the steps per epoch."""
    train = params.train
    launch = launch_of(train.launcher, root)
    model = architecture_of(model_folder, params)
    pictures = image_tokens(params.ingest.image_size, params, model.merge)
    if prompt_tokens is None:
        prompt_tokens = pictures + TEXT_TOKENS
        if train.max_prompt_length is not None:
            prompt_tokens = min(prompt_tokens, train.max_prompt_length)
    per_step = train.per_device_train_batch_size * launch.processes * train.gradient_accumulation_steps
    steps_per_generation = int(train.trl.get("steps_per_generation") or train.gradient_accumulation_steps)
    per_generation = train.per_device_train_batch_size * launch.processes * steps_per_generation
    # TRL's RepeatSampler yields whole generation batches only, each num_iterations x steps_per_generation times
    # (one dataloader batch each); the Trainer counts an optimizer step per gradient_accumulation_steps of them
    steps_per_epoch = None if questions is None else math.ceil(
        questions // (per_generation // train.num_generations) * train.num_iterations * steps_per_generation
        / train.gradient_accumulation_steps)
    sizes = _Sizes(params, launch, model, device, prompt_tokens, pictures, steps_per_generation)
    return MemoryPlan(device=device, launch=launch, architecture=model, persistent=sizes.persistent(),
                      training_pass=sizes.training_pass(), generation=sizes.generation(),
                      prompt_tokens=prompt_tokens, questions_per_step=per_step / train.num_generations,
                      questions=questions, steps_per_epoch=steps_per_epoch, caution=sizes.caution())


class _Sizes:
    """The shares' formulas. Bytes a value: bf16 2, float32 4."""

    def __init__(self, params: Params, launch: Launch, model: Architecture, device: str, prompt_tokens: int,
                 pictures: int, steps_per_generation: int):
        from medr1.model.loading import resolve_weights_dtype

        self.train, self.launch, self.model = params.train, launch, model
        self.prompt_tokens, self.pictures, self.steps_per_generation = prompt_tokens, pictures, steps_per_generation
        self.deepspeed = launch.zero_stage is not None
        bf16 = device == "cuda"  # the TrainingArguments' bf16 (medr1/train/trl_config.py), DeepSpeed's too
        weights_bf16 = str(resolve_weights_dtype(self.train.weights_dtype, device)) == "torch.bfloat16"
        self.weight_bytes = 2 if (bf16 if self.deepspeed else weights_bf16) else 4
        self.value_bytes = 2 if bf16 else 4  # activations: bf16 compute on CUDA
        self.rows = self.train.per_device_train_batch_size
        self.tokens = prompt_tokens + self.train.max_completion_length
        self.reference = self.train.beta != 0 and not self.train.lora.enabled  # TRL builds one only then

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
        lr = self.train.learning_rate
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
                                f"{m.parameters:,} x {w} B (beta {self.train.beta}; TRL builds it in the policy's "
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
        formula = f"(8 x {m.hidden} + 2 x {m.kv_width} + 4 x {m.intermediate})"
        if self.train.gradient_checkpointing:  # each layer's input kept, one layer's activations recomputed
            text = rows * tokens * (m.layers * m.hidden * self.weight_bytes + layer * a)
            how = (f"{rows} rows x {tokens} tokens x ({m.layers} layers x {m.hidden} x {self.weight_bytes} B + one "
                   f"layer's {formula} x {a} B): gradient checkpointing")
        else:
            text = rows * tokens * m.layers * layer * a
            how = f"{rows} rows x {tokens} tokens x {m.layers} layers x {formula} values x {a} B"
        shares.append(Share("activations, language model", text, how))
        patches = self.pictures * m.merge**2
        block = 10 * m.vision_hidden + (4 if m.vision_gated else 2) * m.vision_intermediate
        formula = f"(10 x {m.vision_hidden} + {4 if m.vision_gated else 2} x {m.vision_intermediate})"
        if self.train.gradient_checkpointing:
            vision = rows * patches * (m.vision_depth * m.vision_hidden + block) * a
            how = (f"up to {rows} pictures x {patches} patches x ({m.vision_depth} blocks x {m.vision_hidden} + one "
                   f"block's {formula}) x {a} B: gradient checkpointing")
        else:
            vision = rows * patches * m.vision_depth * block * a
            how = f"up to {rows} pictures x {patches} patches x {m.vision_depth} blocks x {formula} x {a} B"
        shares.append(Share("activations, vision tower", vision, how))
        scored = self.train.max_completion_length + 1
        shares.append(Share("completion scores", 2 * rows * scored * m.vocab * a,
                            f"2 (logits, log-softmax) x {rows} rows x {scored} positions x {m.vocab:,} x {a} B"))
        return shares

    def generation(self) -> list[Share]:
        m, a = self.model, self.value_bytes
        rows = self.rows * self.steps_per_generation
        scored = self.train.max_completion_length + 1
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
    except (AttributeError, KeyError, TypeError, ValueError) as error:
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

