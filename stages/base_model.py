"""Stage base_model: the tiny warmed-up Qwen2-VL, or a reference to a local Qwen2-VL checkpoint."""

from pathlib import Path

from medr1.config import load_params
from medr1.data.records import read_jsonl
from medr1.errors import PipelineError, run_main
from medr1.model.base import reference_local_base
from medr1.pipeline.staging import publish, staging_for

OUT = Path("models/base")


def main() -> None:
    params = load_params().base_model
    staging = staging_for(OUT)
    if params.kind == "tiny":
        from medr1.tiny.build import build_tiny_base  # torch and transformers: seconds a local reference does without

        records = list(read_jsonl(Path("data/processed/train.jsonl")))
        reference = build_tiny_base(records, params, staging, published_at=OUT)
        print(f"[base_model] tiny Qwen2-VL, {reference['parameters']:,} parameters, "
              f"warm-up loss {reference['warmup_final_loss']:.3f}")
    else:
        if not params.path:
            raise PipelineError("base_model.kind is local but base_model.path is empty: name a Qwen2-VL folder")
        reference = reference_local_base(Path(params.path), staging)
        print(f"[base_model] local checkpoint {reference['path']} sha256 {reference['sha256'][:12]}")
    publish(staging, OUT)


if __name__ == "__main__":
    run_main(main, "base_model")
