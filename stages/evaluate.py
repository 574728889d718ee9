"""Stage evaluate: greedy decoding on the test split for the base, SFT and GRPO models."""

import csv
import json
from pathlib import Path

from medr1.config import load_params
from medr1.errors import run_main
from medr1.evaluate.evaluation import evaluate_models
from medr1.evaluate.metrics import NO_ANSWER, unreadable_note
from medr1.model.base import base_model_dir
from medr1.task.spec import evaluation_tasks

DATA = Path("data/processed")
METRICS = Path("metrics/eval.json")
ANSWERS = Path("metrics/plots/grpo_answers.csv")  # `dvc plots show` draws its confusion matrix


def write_answer_pairs(predictions: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with predictions.open() as source, out.open("w", newline="") as target:
        writer = csv.writer(target)
        writer.writerow(["answer", "predicted"])
        for line in source:
            prediction = json.loads(line)
            writer.writerow([prediction["answer"], prediction["predicted"] if prediction["readable"] else NO_ANSWER])


def main() -> None:
    params = load_params()
    trained, base = evaluation_tasks(params)
    metrics = evaluate_models(
        {"base": base_model_dir(Path("models/base")), "sft": Path("models/sft"), "grpo": Path("models/grpo")},
        DATA / "test.jsonl",
        DATA,
        trained,
        params.evaluate,
        predictions_dir=Path("reports/predictions"),
        base_task=base,
        trained_on=params.train.group,  # tested on every group either way; the metrics tell its own from the others
    )
    METRICS.parent.mkdir(parents=True, exist_ok=True)
    METRICS.write_text(json.dumps(metrics, indent=1))
    write_answer_pairs(Path("reports/predictions/grpo.jsonl"), ANSWERS)
    print(f"[evaluate] GRPO accuracy {metrics['accuracy']:.3f} (base {metrics['base_accuracy']:.3f}, "
          f"SFT {metrics['sft_accuracy']:.3f}, chance {metrics['chance_accuracy']:.3f}), "
          f"format rate {metrics['format_rate']:.3f}, {trained.protocol} grading")
    for label, prefix in (("base", "base_"), ("SFT", "sft_"), ("GRPO", "")):
        if metrics.get(f"{prefix}mostly_unreadable"):
            print(f"[evaluate] warning: {metrics[f'{prefix}unreadable_share']:.1%} of the outputs unreadable. "
                  f"{unreadable_note(label, trained.protocol, params.train.reasoning)}")


if __name__ == "__main__":
    run_main(main, "evaluate")
