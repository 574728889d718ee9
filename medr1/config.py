"""params.yaml as typed configuration: one section per stage, unknown or ill-typed keys rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medr1.records import MODALITIES, QUESTION_TYPES


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TinyArchitecture(Section):
    """Sizes of the tiny Qwen2-VL (Qwen2-VL-2B's architecture, scaled down)."""

    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    vision_depth: int = 2
    vision_embed_dim: int = 96
    vision_num_heads: int = 4
    image_side: int = 112  # the processor resizes the 384x384 images to this side


class WarmupSettings(Section):
    images: int = 600
    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0
    eyesight_steps: int = 300
    eyesight_learning_rate: float = 3e-3


class SyntheticSource(Section):
    images_per_modality: int = Field(40, ge=1)
    seed: int = 7


class Medr1SplitsSource(Section):
    family: Literal["modality", "question_type"] = Field("modality", description="which of Med-R1's split families to read")
    keep_source_split: bool = Field(False, description="use Med-R1's own train/test files (they share images) instead of splitting by image hash")
    images_root: str | None = Field(None, description="the OmniMedVQA folder holding Images/; default: ingest.root")


class IngestParams(Section):
    source: Literal["synthetic", "omnimedvqa", "medr1-splits"] = "synthetic"
    root: str = Field("data/raw/synthetic", description="the source folder (OmniMedVQA layout, or Med-R1's Splits/)")
    synthetic: SyntheticSource = SyntheticSource()
    medr1_splits: Medr1SplitsSource = Medr1SplitsSource()
    image_size: int = Field(384, ge=28)
    image_cache: str | None = Field("data/cache/images", description="resized images by source content hash; null: no cache")
    test_fraction: float = Field(0.3, gt=0, lt=1)
    seed: int = 13


class ValidateParams(Section):
    min_rows_per_modality: int = Field(1, ge=0)
    max_answer_share: float = Field(1.0, gt=0, le=1, description="no answer letter above this share of a split")
    max_modality_share: float = Field(1.0, gt=0, le=1, description="no modality above this share of a split")


class BaseModelParams(Section):
    kind: Literal["tiny", "local"] = "tiny"
    path: str | None = Field(None, description="with kind: local, a Qwen2-VL checkpoint folder")
    seed: int = 0
    architecture: TinyArchitecture = TinyArchitecture()
    warmup: WarmupSettings = WarmupSettings()


class LoraParams(Section):
    enabled: bool = Field(False, description="train LoRA adapters (peft) instead of the full model")
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1)


class TrainParams(Section):
    reasoning: Literal["think_before", "no_think", "think_after"] = "think_after"
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    max_steps: int = Field(200, ge=1)
    checkpoint_steps: int = Field(50, ge=1, description="save a resumable checkpoint every this many steps")
    launcher: str = Field("python", description='the command that runs `-m stages.train`: python, or "accelerate launch --config_file ..."')
    gradient_checkpointing: bool = False
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto", description="auto: flash_attention_2 on CUDA when flash-attn is installed, else sdpa")
    use_vllm: bool = Field(False, description="generate with TRL's vLLM integration (GPU only)")
    vllm_mode: Literal["colocate", "server"] = "colocate"
    lora: LoraParams = LoraParams()
    learning_rate: float = Field(1e-3, gt=0)
    per_device_train_batch_size: int = Field(16, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    num_generations: int = Field(8, ge=2)
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.0, ge=0)
    num_iterations: int = Field(1, ge=1, description="GRPO's mu: optimizer steps on each generated batch")
    epsilon: float = Field(0.2, gt=0, description="clipping of the policy ratio (matters when num_iterations > 1)")
    max_completion_length: int = Field(16, ge=1)
    format_weight: float = Field(1.0, ge=0)
    accuracy_weight: float = Field(1.0, ge=0)
    logging_steps: int = Field(5, ge=1)
    seed: int = 42


class SftParams(Section):
    max_steps: int = Field(300, ge=1)
    learning_rate: float = Field(0.02, gt=0)
    per_device_train_batch_size: int = Field(8, ge=1, description="questions per step")
    logging_steps: int = Field(10, ge=1)
    seed: int = 42


class EvaluateParams(Section):
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(256, ge=1, description="Med-R1's limit; rows stop earlier once their verdict is settled")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: a CUDA GPU when there is one")


class PromotionGate(Section):
    """What a version must show before `medr1 registry promote` gives it an alias."""

    min_accuracy: float = Field(0.0, ge=0, le=1, description="metrics.accuracy at least this")
    min_gain_over_base: float = Field(0.0, ge=-1, le=1, description="accuracy - base_accuracy at least this")
    require_validation: bool = Field(True, description="the data checks before its training passed")


class PromotionGates(Section):
    candidate: PromotionGate = PromotionGate()
    staging: PromotionGate = PromotionGate(min_accuracy=0.4, min_gain_over_base=0.1)
    production: PromotionGate = PromotionGate(min_accuracy=0.45, min_gain_over_base=0.15)


class RegisterParams(Section):
    store: str = Field("file://models/store", description="file://<folder> or s3://<bucket>/<prefix>")
    name: str = "med-r1"
    gates: PromotionGates = PromotionGates()


class StudyParams(Section):
    modalities: list[str] = Field(["CT", "MRI", "X-Ray"], description="one GRPO model per entry, tested on each; the paper: all 8")
    question_types: list[str] = Field(["Modality Recognition", "Anatomy Identification", "Disease Diagnosis"],
                                      description="likewise for question types; the paper: all 5")
    max_steps: int = Field(150, ge=1, description="GRPO steps of each study model (the rest of the recipe is train's)")

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, names: list[str]) -> list[str]:
        return _known(names, MODALITIES, "modality")

    @field_validator("question_types")
    @classmethod
    def _known_question_types(cls, names: list[str]) -> list[str]:
        return _known(names, QUESTION_TYPES, "question type")


def _known(names: list[str], vocabulary: tuple[str, ...], what: str) -> list[str]:
    unknown = [name for name in names if name not in vocabulary]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}: use names from {', '.join(vocabulary)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a {what} is listed twice in {names}")
    return names


class Params(Section):
    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    base_model: BaseModelParams = BaseModelParams()
    train: TrainParams = TrainParams()
    sft: SftParams = SftParams()
    evaluate: EvaluateParams = EvaluateParams()
    study: StudyParams = StudyParams()
    register_: RegisterParams = Field(RegisterParams(), alias="register")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ParamsError(ValueError):
    """params.yaml is malformed; the message names every bad key."""


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: run from the repository root or pass --params") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {error}") from None
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        problems = []
        for issue in error.errors():
            key = ".".join(str(part) for part in issue["loc"])
            problems.append(f"  {key}: {issue['msg']}")
        raise ParamsError(f"{path} has {len(problems)} bad key(s):\n" + "\n".join(problems)) from None
