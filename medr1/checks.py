"""Great Expectations checks over the ingested records, run as a GX checkpoint.

Facts that need Python (does the image decode? is the answer among the options?) are
computed into columns first; GX then validates every column and reports failures with the
question_id of each offending row.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd
from PIL import Image

from medr1.records import LETTERS, MODALITIES, QUESTION_TYPES, Record

SUITE_NAME = "medr1_records"
REQUIRED_COLUMNS = ("question_id", "dataset", "modality", "question_type", "question", "options", "answer", "image", "image_sha256")


def _image_decodes(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


def records_frame(records: list[Record] | list[dict], image_root: Path, split: str) -> pd.DataFrame:
    rows = []
    for record in records:
        row = record.model_dump() if isinstance(record, Record) else dict(record)
        options = row.get("options") or {}
        image_path = image_root / str(row.get("image", ""))
        row.update(
            split=split,
            option_count=len(options),
            answer_in_options=row.get("answer") in options,
            options_lettered=list(options) == list(LETTERS[: len(options)]),
            image_exists=image_path.is_file(),
            image_decodes=image_path.is_file() and _image_decodes(image_path),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def splits_frame(data: Path) -> pd.DataFrame:
    """The train and test records of an ingested folder, with their computed facts, in one frame."""
    frames = []
    for split in ("train", "test"):
        path = data / f"{split}.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.is_file() else []
        frames.append(records_frame(rows, data, split))
    return pd.concat(frames, ignore_index=True)


def _suite(gx, min_rows_per_modality: int):
    E = gx.expectations
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    for column in REQUIRED_COLUMNS:
        suite.add_expectation(E.ExpectColumnToExist(column=column))
        suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(E.ExpectColumnValuesToBeUnique(column="question_id"))
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="modality", value_set=list(MODALITIES)))
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="question_type", value_set=list(QUESTION_TYPES)))
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="answer", value_set=list(LETTERS)))
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(column="option_count", min_value=2, max_value=len(LETTERS)))
    for flag in ("answer_in_options", "options_lettered", "image_exists", "image_decodes"):
        suite.add_expectation(E.ExpectColumnValuesToBeInSet(column=flag, value_set=[True]))
    suite.add_expectation(E.ExpectColumnValueLengthsToEqual(column="image_sha256", value=64))
    suite.add_expectation(E.ExpectTableRowCountToBeBetween(min_value=max(1, min_rows_per_modality)))
    return suite


def run_checks(frame: pd.DataFrame, min_rows_per_modality: int = 1) -> dict:
    """Run the suite as a checkpoint over `frame`; returns a JSON-able summary."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # the stage prints its own summary
    asset = context.data_sources.add_pandas("medr1").add_dataframe_asset("records")
    batch = asset.add_batch_definition_whole_dataframe("all records")
    suite = context.suites.add(_suite(gx, min_rows_per_modality))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="records", data=batch, suite=suite))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="medr1_checkpoint",
            validation_definitions=[definition],
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["question_id"]},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    expectations = []
    for validation in result.run_results.values():
        for outcome in validation.results:
            config = outcome.expectation_config
            details = outcome.result or {}
            examples = [
                str(entry.get("question_id", entry)) if isinstance(entry, dict) else str(entry)
                for entry in (details.get("unexpected_index_list") or [])[:5]
            ]
            expectations.append(
                {
                    "expectation": config.type,
                    "column": config.kwargs.get("column"),
                    "success": bool(outcome.success),
                    "unexpected_count": int(details.get("unexpected_count") or 0),
                    "examples": examples,
                }
            )
    failed = [e for e in expectations if not e["success"]]
    per_modality = frame["modality"].value_counts().to_dict() if "modality" in frame else {}
    too_small = {m: int(per_modality.get(m, 0)) for m in MODALITIES if 0 < per_modality.get(m, 0) < min_rows_per_modality}
    if too_small:
        failed.append(
            {
                "expectation": "min_rows_per_modality",
                "column": "modality",
                "success": False,
                "unexpected_count": len(too_small),
                "examples": [f"{m}: {n} rows" for m, n in too_small.items()],
            }
        )
    return {
        "success": not failed,
        "rows": len(frame),
        "evaluated_expectations": len(expectations),
        "failed": failed,
        "expectations": expectations,
    }


def describe_failures(summary: dict) -> str:
    lines = [f"data checks failed: {len(summary['failed'])} of {summary['evaluated_expectations']} expectations over {summary['rows']} rows"]
    for failure in summary["failed"]:
        column = f" on {failure['column']}" if failure["column"] else ""
        lines.append(f"  - {failure['expectation']}{column}: {failure['unexpected_count']} offending row(s)")
        if failure["examples"]:
            lines.append(f"      e.g. {', '.join(failure['examples'])}")
    return "\n".join(lines)
