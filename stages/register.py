"""Stage register: publish models/grpo as an immutable version with its full lineage."""

import json
from pathlib import Path

from medr1.config import load_params, read_params_yaml
from medr1.errors import MissingFileError, PipelineError, run_main
from medr1.model.base import base_reference
from medr1.pipeline.recipes import recipe_changes
from medr1.registry.backends import open_store
from medr1.registry.comparison import evaluation_record
from medr1.registry.lineage import data_dependencies, git_state, package_versions, read_lock, record_counts
from medr1.registry.model_card import model_card, with_card
from medr1.registry.redaction import redact
from medr1.registry.versions import register

OUT = Path("metrics/registered.json")
TEST_SPLIT = Path("data/processed/test.jsonl")
PREDICTIONS = Path("reports/predictions/grpo.jsonl")  # the evaluate stage's, on TEST_SPLIT
DRIFT = Path("reports/validation/drift.json")
UPSTREAM = ("synthesize", "ingest", "validate", "base_model", "train", "evaluate")


def main() -> None:
    params = load_params()
    metrics = json.loads(Path("metrics/eval.json").read_text())
    validation = json.loads(Path("reports/validation/summary.json").read_text())
    if not validation["success"]:
        raise PipelineError("the data checks failed (reports/validation/summary.json); nothing is registered")
    ingest = json.loads(Path("metrics/ingest.json").read_text())
    stages = read_lock(Path("dvc.lock"))
    missing = [stage for stage in ("ingest", "train") if stage not in stages]
    if missing:
        raise PipelineError(f"dvc.lock has no record of {missing}: run `dvc repro`, not this script alone")
    for needed in (TEST_SPLIT, PREDICTIONS):
        if not needed.is_file():
            raise MissingFileError(f"{needed} is missing: a version is registered with its test predictions, which "
                                   "promotions compare on; run `dvc repro`, not this script alone")
    raw_params = read_params_yaml(Path("params.yaml").read_text())
    lineage = {
        "base_model": base_reference(Path("models/base")),
        "data": data_dependencies(stages, UPSTREAM),
        "dvc_lock": {name: stages[name] for name in UPSTREAM if name in stages},
        "params": raw_params,
        "recipe": {"name": params.recipe, "changed": recipe_changes(raw_params, params.recipe)},
        "metrics": metrics,
        "validation": {k: validation[k] for k in ("success", "rows", "evaluated_expectations")},
        "ingest": ingest,
        "records": record_counts(ingest),
        "git": git_state(Path(".")),
        "evaluation": evaluation_record(TEST_SPLIT, PREDICTIONS, {"reasoning": params.train.reasoning,
                                                                  "prompts": params.train.prompts,
                                                                  "protocol": metrics.get("protocol")}),
        "packages": package_versions(),
    }
    drift = json.loads(DRIFT.read_text()) if DRIFT.is_file() else None  # the flow's drift checks (docs/drift.md)
    if drift and drift["data"].get("md5") == stages["ingest"]["outs"].get("data/processed"):  # of this data only
        lineage["drift"] = drift
    store = open_store(params.register_.store, base=Path.cwd())
    name = params.register_.name
    with with_card(Path("models/grpo"), model_card(name, redact(lineage))) as model_dir:  # a Hugging Face folder
        manifest = register(store, name, model_dir, lineage,
                            evaluations={lineage["evaluation"]["split"]["md5"]: PREDICTIONS})
    OUT.write_text(json.dumps({"name": manifest["name"], "version": manifest["version"], "store": store.url}, indent=1))
    print(f"[register] {manifest['name']} version {manifest['version']} in {store.url}")


if __name__ == "__main__":
    run_main(main, "register")
