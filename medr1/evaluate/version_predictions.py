"""A registered version's predictions on a test split it was never tested on: what a promotion needs when the
version an alias points at was measured on other questions than the candidate (medr1/registry/comparison.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from medr1.errors import PipelineError
from medr1.registry.comparison import Reevaluate, md5_of
from medr1.registry.store import ObjectStore
from medr1.registry.versions import pull


def reevaluator(store: ObjectStore, params, checkout: Path, out: Path | None = None) -> Reevaluate:
    """Re-evaluate a version on the candidate's split, from this checkout's data and with its evaluate params
    (the trained task, as the evaluate stage asks the GRPO model). Predictions are written under `out`
    (default: a new temporary folder); the model code loads only when a version has to be evaluated."""

    def reevaluate(manifest: dict, split: dict) -> Path:
        test = checkout / split["path"]
        if not test.is_file() or md5_of(test) != split["md5"]:
            here = md5_of(test) if test.is_file() else "missing"
            raise PipelineError(
                f"the candidate was tested on {split['path']} with md5 {split['md5']}, here it is {here}: to "
                f"re-evaluate version {manifest['version']} on the candidate's questions, check out the data the "
                "candidate was registered from (its git commit, then `dvc checkout`; `medr1 audit model <candidate>` "
                "shows both)")
        from medr1.data.records import read_jsonl
        from medr1.evaluate.evaluation import predict, write_predictions
        from medr1.model.loading import load_for_evaluation
        from medr1.task.spec import evaluation_tasks

        print(f"[promote] version {manifest['version']} was not tested on these {split['path']} questions: "
              "evaluating it on them")
        with tempfile.TemporaryDirectory() as folder:
            model_dir = Path(folder) / "model"
            pull(store, manifest["version"], model_dir)
            model, processor = load_for_evaluation(model_dir, params.evaluate.device)
            predictions = predict(model, processor, list(read_jsonl(test)), test.parent, evaluation_tasks(params)[0],
                                  params.evaluate, desc=f"evaluate {manifest['version'][:8]}")
        into = out or Path(tempfile.mkdtemp(prefix="medr1-reevaluated-"))
        target = into / f"{manifest['version']}-{split['md5']}.jsonl"
        write_predictions(predictions, target)
        return target

    return reevaluate
