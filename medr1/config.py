"""params.yaml as typed configuration: one section per stage, unknown or ill-typed keys rejected.

params.yaml is the one source of every value: the types below carry bounds and descriptions but
no defaults, so a key missing from params.yaml is an error that names it, never a second,
silently different number. TRL's settings are not re-declared here: train.trl and sft.trl hold
any GRPOConfig / SFTConfig field by its TRL name (TRL's default where unset), checked against the
installed TRL where the configs are built (medr1/train/trl_config.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medr1.data.records import MODALITIES, QUESTION_TYPES, UNKNOWN, family_of
from medr1.errors import PipelineError


def _steps_or_epochs(steps: int) -> int:
    if steps == 0:
        raise ValueError("0 steps trains nothing: give a number of steps, or -1 to train trl.num_train_epochs epochs")
    return steps


StepsOrEpochs = Annotated[int, Field(ge=-1), AfterValidator(_steps_or_epochs)]

# What train.launcher may be. stages/launch.py runs it as an argument list, never through a shell,
# and every word must be one of these: a param cannot smuggle a command in (flow overrides included).
_NUMBER, _HOST = r"\d{1,6}", r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}"
_LAUNCHER_OPTIONS = {
    "torchrun": {"--standalone": None, "--nproc_per_node": _NUMBER, "--nproc-per-node": _NUMBER, "--nnodes": _NUMBER,
                 "--node_rank": _NUMBER, "--master_addr": _HOST, "--master_port": _NUMBER},
    "accelerate launch": {"--config_file": r"infra/accelerate/[A-Za-z0-9_-]+\.yaml", "--num_processes": _NUMBER,
                          "--num_machines": _NUMBER, "--machine_rank": _NUMBER, "--main_process_ip": _HOST,
                          "--main_process_port": _NUMBER, "--mixed_precision": "no|fp16|bf16"},
}
LAUNCHER_FORMS = ("python; torchrun with --standalone, --nproc_per_node N, --nnodes N, --node_rank N, --master_addr "
                  "HOST, --master_port N; or accelerate launch with --config_file infra/accelerate/<name>.yaml, "
                  "--num_processes N, --num_machines N, --machine_rank N, --main_process_ip HOST, "
                  "--main_process_port N, --mixed_precision no|fp16|bf16")


def launcher_command(text: str) -> list[str]:
    """train.launcher as the argument list it runs; a ValueError naming the first word that is not allowed."""
    parsed_launcher(text)
    return text.split()


def parsed_launcher(text: str) -> tuple[str, dict[str, str]]:
    """train.launcher as its program (python, torchrun, accelerate launch) and its options (name -> value, ""
    for a flag); a ValueError naming the first word that is not allowed."""
    words = text.split()
    if words in (["python"], ["python3"]):
        return words[0], {}
    program = "accelerate launch" if words[:2] == ["accelerate", "launch"] else words[0] if words else ""
    if program not in _LAUNCHER_OPTIONS:
        raise ValueError(f"train.launcher {text!r} is not a launcher the pipeline runs; use {LAUNCHER_FORMS}")
    options, rest, parsed = _LAUNCHER_OPTIONS[program], words[len(program.split()):], {}
    while rest:
        name, _, value = rest.pop(0).partition("=")
        if name not in options:
            raise ValueError(f"train.launcher: {name!r} is not an option the pipeline passes to {program} "
                             f"(allowed: {', '.join(options)})")
        if options[name] is None:
            if value:
                raise ValueError(f"train.launcher: {name} takes no value")
            parsed[name] = ""
            continue
        if not value:
            value = rest.pop(0) if rest else ""
        if not re.fullmatch(options[name], value):
            raise ValueError(f"train.launcher: {value!r} is not a value {name} takes (expected {options[name]})")
        parsed[name] = value
    return program, parsed


def _allowed_launcher(text: str) -> str:
    launcher_command(text)
    return text


Launcher = Annotated[str, AfterValidator(_allowed_launcher)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TinyArchitecture(Section):
    """Sizes of the tiny Qwen2-VL (Qwen2-VL-2B's architecture, scaled down)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vision_depth: int
    vision_embed_dim: int
    vision_num_heads: int
    image_side: int


class WarmupSettings(Section):
    images: int
    steps: int
    batch_size: int
    learning_rate: float
    seed: int
    eyesight_steps: int
    eyesight_learning_rate: float


class SyntheticSource(Section):
    images_per_modality: int = Field(ge=1)
    seed: int


class Medr1SplitsSource(Section):
    family: Literal["modality", "question_type"] = Field(description="which of Med-R1's split families to read")
    keep_source_split: bool = Field(
        description="use Med-R1's own train/test files (they share images) instead of splitting by image hash")
    images_root: str | None = Field(description="the OmniMedVQA folder holding Images/; default: ingest.root")


class IngestParams(Section):
    source: Literal["synthetic", "omnimedvqa", "medr1-splits"]
    root: str = Field(description="the source folder (OmniMedVQA layout, or Med-R1's Splits/)")
    synthetic: SyntheticSource
    medr1_splits: Medr1SplitsSource
    image_size: int = Field(ge=28)
    image_cache: str | None = Field(description="resized images by source content hash; null: no cache")
    test_fraction: float = Field(gt=0, lt=1)
    seed: int
    accept_unreadable_files: bool = Field(
        description="false: a source file that cannot be read at all stops the ingest, naming it; true: its "
                    "questions count as dropped and the file is listed")


class DriftCheck(Section):
    """One drift check against the reference version's training data (docs/drift.md)."""

    threshold: float = Field(ge=0, description="the largest statistic that passes (KL divergence in nats, a "
                                               "relative change of a mean, or a share)")
    action: Literal["fail", "report"] = Field(description="fail: a check above its threshold stops the run; "
                                                          "report: it is only reported")


class DriftParams(Section):
    against: str | None = Field(description="the version or alias (of register.name) whose training data new data "
                                            "is compared with; an alias that points nowhere yet skips the checks; "
                                            "null: no drift checks")
    image_sample: int = Field(ge=1, description="at most this many images per side are opened for image statistics")
    modality_share: DriftCheck
    question_type_share: DriftCheck
    answer_share: DriftCheck
    option_count: DriftCheck
    question_length: DriftCheck
    image_intensity: DriftCheck
    image_size: DriftCheck
    seen_images: DriftCheck


class ValidateParams(Section):
    min_rows_per_modality: int = Field(ge=0)
    max_answer_share: float = Field(gt=0, le=1, description="no answer letter above this share of a split")
    max_modality_share: float = Field(gt=0, le=1, description="no modality above this share of a split")
    shared_images: Literal["fail", "report"] = Field(
        description="an image in both splits fails the checks, or is only reported (Med-R1's own split files)")
    drift: DriftParams


class BaseModelParams(Section):
    kind: Literal["tiny", "local"]
    path: str | None = Field(description="with kind: local, a Qwen2-VL checkpoint folder")
    # The tiny model's own settings: a local checkpoint needs none of them.
    seed: int | None = Field(None, description="with kind: tiny, the seed of its build and warm-up")
    architecture: TinyArchitecture | None = Field(None, description="with kind: tiny, its sizes")
    warmup: WarmupSettings | None = Field(None, description="with kind: tiny, its warm-up")

    @model_validator(mode="after")
    def _tiny_settings_for_the_tiny_model(self):
        missing = [f"base_model.{name}" for name in ("seed", "architecture", "warmup") if getattr(self, name) is None]
        if missing and self.kind != "local":  # the tiny model is built here from them
            raise ValueError(f"base_model.kind: tiny builds the tiny model here and needs {', '.join(missing)} "
                             "(recipes/embedded-cpu.yaml and the shipped params.yaml have them); or use kind: local "
                             "with base_model.path")
        return self


class LoraParams(Section):
    enabled: bool = Field(description="train LoRA adapters (peft) instead of the full model")
    r: int = Field(ge=1)
    alpha: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    target_modules: list[str] = Field(min_length=1)


def _known_group(group: str | None) -> str | None:
    if group is not None:
        family_of(group)
    return group


class TrainParams(Section):
    group: Annotated[str | None, AfterValidator(_known_group)] = Field(
        description="the train questions of the main run (stages train and sft): null pools every train question; "
                    "a modality or question type (e.g. CT) trains on that group's file only, as Med-R1's scripts "
                    "do. Evaluation tests on every group either way")
    reasoning: Literal["think_before", "no_think", "think_after"]
    device: Literal["auto", "cpu", "cuda"]
    launcher: Launcher = Field(
        description='the command that runs `-m stages.train`, and `-m stages.sft` unless sft.launcher is set '
                    '(no shell): python, torchrun ..., or "accelerate launch --config_file '
                    'infra/accelerate/<name>.yaml ..."')
    max_pixels: int | None = Field(ge=1, description="the training processor's image size limit (Med-R1: "
                                   "401,408); null: the checkpoint's own, and train.min_pixels is unused")
    min_pixels: int = Field(ge=1, description="the training processor's lower image size limit (Med-R1: 3,136)")
    max_prompt_length: int | None = Field(ge=1, description="the longest train prompt in tokens, image tokens "
                                          "included; a longer one is refused before training, not cut (Med-R1: "
                                          "1024, which its trainer cuts); null: no limit")
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        description="auto: flash_attention_2 on CUDA where flash-attn imports, else sdpa; flash_attention_2 "
                    "without flash-attn (or on the CPU) is refused before the model loads")
    weights_dtype: Literal["auto", "bfloat16", "float32"] = Field(
        description="the dtype the policy and the reference model load in; auto: bfloat16 on CUDA (outside "
                    "DeepSpeed AdamW then keeps bf16 state too, docs/gpu-training.md), float32 on the CPU")
    lora: LoraParams
    reward_funcs: list[Literal["format", "accuracy"]] = Field(min_length=1, description="open-r1's reward_funcs")
    rewards: Literal["strict", "med-r1"] = Field(
        description="med-r1: Med-R1's published reward functions, quirks included; strict: ours (docs/fidelity.md)")
    prompts: Literal["tiny", "med-r1"] = Field(
        description="med-r1: Med-R1's templates and option layout; tiny: the embedded model's layout")
    trl: dict[str, object] = Field(
        description="every setting of TRL's GRPOConfig by its TRL name (learning_rate, max_steps, save_steps, ...), "
                    "checked by name and type against the installed TRL (medr1/train/trl_config.py); unset: "
                    "TRL's default")

    @model_validator(mode="after")
    def _pixel_limits_in_order(self):
        if self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"train.min_pixels {self.min_pixels} is above train.max_pixels {self.max_pixels}")
        return self

    @model_validator(mode="after")
    def _one_weight_per_reward(self):
        weights = self.trl.get("reward_weights")
        if isinstance(weights, list) and len(weights) != len(self.reward_funcs):
            raise ValueError(f"trl.reward_weights has {len(weights)} entries for {len(self.reward_funcs)} "
                             f"reward_funcs {self.reward_funcs}: give one weight per reward")
        return self


class SftParams(Section):
    style: Literal["completion_only", "med-r1"] = Field(
        description="completion_only: the run's prompt, loss on the gold completion; med-r1: Med-R1's sft.py "
                    "(its system prompt and example layout, loss on every token; docs/fidelity.md)")
    launcher: Launcher | None = Field(
        description="the command that runs `-m stages.sft`, in train.launcher's forms; null: train.launcher (Med-R1 "
                    "launches its SFT otherwise than its GRPO runs, docs/fidelity.md)")
    trl: dict[str, object] = Field(
        description="every setting of TRL's SFTConfig by its TRL name (learning_rate, max_steps, ...), checked by "
                    "name and type against the installed TRL (medr1/train/trl_config.py); unset: TRL's default")


class EvaluateParams(Section):
    protocol: Literal["strict", "med-r1", "med-r1-qwen2.5"] = Field(
        description="how an output is graded: Med-R1's Qwen2-VL or Qwen2.5-VL scripts, or ours (docs/fidelity.md)")
    base_prompt: Literal["trained", "zero_shot"] = Field(
        description="the base model's prompt: the trained model's, or Med-R1's zero-shot one (style med-r1)")
    batch_size: int = Field(ge=1)
    max_new_tokens: int = Field(ge=1, description="Med-R1's limit; rows stop earlier once their verdict is settled")
    device: Literal["auto", "cpu", "cuda"] = Field(description="auto: a CUDA GPU when there is one")
    image_window: int = Field(ge=1, description="processed images held at once (the split is evaluated in "
                                                "windows of this many images): memory flat in the split size")


class PromotionGate(Section):
    """What a version must show before `medr1 registry promote` gives it an alias: absolute numbers, then a
    paired comparison with the version the alias points at now, on the candidate's test questions
    (medr1/registry/comparison.py)."""

    min_accuracy: float = Field(ge=0, le=1, description="metrics.accuracy at least this")
    min_gain_over_base: float = Field(ge=-1, le=1, description="accuracy - base_accuracy at least this")
    require_validation: bool = Field(description="the data checks before its training passed")
    must_beat_current: bool = Field(
        description="the accuracy difference with the alias's current version, on the same questions, must have its "
                    "interval above -max_drop (above 0 when min_improvement is set)")
    max_drop: float = Field(ge=0, le=1,
                            description="with must_beat_current: how much worse the candidate may credibly be")
    min_improvement: float | None = Field(
        ge=0, le=1,
        description="with must_beat_current: null, or the difference must be at least this and its interval above 0")
    max_slice_drop: float | None = Field(
        ge=0, le=1, description="null, or no modality or question type with min_slice_questions questions may be worse "
                                "than the current version by more than this with its interval below 0")
    min_slice_questions: int = Field(ge=1, description="slices with fewer test questions are shown, never judged")


class ComparisonSettings(Section):
    """The paired bootstrap behind every candidate-against-current interval (medr1/evaluate/paired.py)."""

    resamples: int = Field(ge=100)
    level: float = Field(gt=0, lt=1)
    seed: int


class PromotionGates(Section):
    candidate: PromotionGate
    staging: PromotionGate
    production: PromotionGate


class RegisterParams(Section):
    store: str = Field(description="file://<folder> or s3://<bucket>/<prefix>")
    name: str
    gates: PromotionGates
    comparison: ComparisonSettings
    auto_promote: list[Literal["candidate", "staging", "production"]] = Field(
        description="aliases the pipeline flow promotes a newly registered version to, in order, each behind its "
                    "gate; the first refusal stops the list")


class StudyParams(Section):
    modalities: list[str] = Field(description="one GRPO model per entry, tested on each; the paper: all 8")
    question_types: list[str] = Field(description="likewise for question types; the paper: all 5")
    max_steps: StepsOrEpochs = Field(
        description="GRPO steps of each study GRPO model (its SFT model is given as many questions; the rest of "
                    "the recipe is train's and sft's); -1: both train study.num_train_epochs epochs of the group's "
                    "train questions instead")
    num_train_epochs: int = Field(ge=1, description="with max_steps -1: epochs of each study model (Med-R1: 1)")
    parallel: int = Field(ge=1, description="study cells run at once by `python -m flows.fan_out` (the global "
                                            "concurrency limit medr1-cells; each worker, one per GPU, runs one)")

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, names: list[str]) -> list[str]:
        return _known(names, MODALITIES, "modality")

    @field_validator("question_types")
    @classmethod
    def _known_question_types(cls, names: list[str]) -> list[str]:
        return _known(names, QUESTION_TYPES, "question type")


def _known(names: list[str], vocabulary: tuple[str, ...], what: str) -> list[str]:
    if UNKNOWN in names:
        raise ValueError(f"{UNKNOWN!r} is not a {what} to train or test on: it counts the Med-R1 split records "
                         f"whose {what} the other family's files do not give; use names from {', '.join(vocabulary)}")
    unknown = [name for name in names if name not in vocabulary]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}: use names from {', '.join(vocabulary)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a {what} is listed twice in {names}")
    return names


class Params(Section):
    recipe: str = Field(description="the recipe these params were last set from (`medr1 recipe apply` writes it)")
    ingest: IngestParams
    validate_: ValidateParams = Field(alias="validate")
    base_model: BaseModelParams
    train: TrainParams
    sft: SftParams
    evaluate: EvaluateParams
    study: StudyParams
    register_: RegisterParams = Field(alias="register")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def launcher_of(self, stage: Literal["train", "sft"]) -> str:
        """The launcher a training stage runs under: sft.launcher for the sft stage where set, else train.launcher."""
        if stage == "sft" and self.sft.launcher is not None:
            return self.sft.launcher
        return self.train.launcher

    @model_validator(mode="after")
    def _zero_shot_needs_med_r1_prompts(self):
        if self.evaluate.base_prompt == "zero_shot" and self.train.prompts != "med-r1":
            raise ValueError("evaluate.base_prompt: zero_shot is Med-R1's zero-shot prompt, which needs "
                             "train.prompts: med-r1 (the tiny prompts have no zero-shot form); "
                             "or set base_prompt: trained")
        return self


class ParamsError(PipelineError):
    """params.yaml is malformed; the message names every bad key."""


def read_params_yaml(text: str) -> dict:
    """params.yaml's values as DVC reads and writes them: YAML 1.2 (ruamel), where a plain `no` is the string
    "no". `dvc exp run -S` and the flows' overrides rewrite params.yaml through DVC's code, which leaves
    `save_strategy: no` unquoted; a YAML 1.1 reader (PyYAML) would take it for false."""
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(text) or {}


def refuse_old_layout(raw: dict, path: Path) -> None:
    """A params.yaml written by an earlier version (keys medr1/params_migration.py lists) is refused, naming each
    moved key and the command that moves them."""
    from medr1.params_migration import describe, old_keys

    moved = old_keys(raw)
    if moved:
        recipe = raw.get("recipe") or "<recipe>"
        raise ParamsError(f"{path} was written by an earlier version of the pipeline; these keys moved:\n"
                          + "\n".join(f"  {describe(key)}" for key in moved)
                          + f"\nrun `medr1 recipe apply {recipe} --params {path}` to move them (it names each; it "
                          "also sets the recipe's values again)")


def load_params(path: str | Path = "params.yaml") -> Params:
    from ruamel.yaml import YAMLError

    path = Path(path)
    try:
        raw = read_params_yaml(path.read_text())
    except FileNotFoundError as error:
        raise ParamsError(f"{path} not found: run from the repository root or pass --params") from error
    except YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {error}") from error
    refuse_old_layout(raw, path)
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        problems = []
        for issue in error.errors():
            key = ".".join(str(part) for part in issue["loc"])
            problems.append(f"  {key}: {issue['msg']}")
        raise ParamsError(f"{path} has {len(problems)} bad key(s):\n" + "\n".join(problems)) from error
