"""params.yaml as typed configuration: one section per stage, unknown or ill-typed keys rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medr1.tiny_model import TinyArchitecture
from medr1.warmup import WarmupSettings


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    reasoning: Literal["think_before", "no_think", "think_after"] = "no_think"
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
    max_new_tokens: int = Field(16, ge=1)


class RegisterParams(Section):
    store: str = Field("file://models/store", description="file://<folder> (s3:// arrives with the S3 backend)")
    name: str = "med-r1"


class Params(Section):
    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    base_model: BaseModelParams = BaseModelParams()
    train: TrainParams = TrainParams()
    sft: SftParams = SftParams()
    evaluate: EvaluateParams = EvaluateParams()
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
