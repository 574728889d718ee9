"""Great Expectations checks over the ingested records, run as a GX checkpoint.

Facts that need Python (does the image decode? is the answer among the options?) are
computed into columns first; GX then validates every column and reports failures with the
question_id of each offending row.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from PIL import Image

from medr1.data.gx_checkpoint import run_checkpoint
from medr1.data.images import default_workers
from medr1.data.records import LETTERS, MODALITIES, QUESTION_TYPES, UNKNOWN, Record, json_lines

if TYPE_CHECKING:
    from medr1.config import Params

SUITE_NAME = "medr1_records"
REQUIRED_COLUMNS = ("question_id", "dataset", "modality", "question_type", "question", "options", "answer", "image",
                    "image_sha256")


def _image_facts(path: Path, size: int) -> tuple[bool, bool]:
    """(decodes, is a size x size RGB image)."""
    try:
        with Image.open(path) as image:
            image.load()
            return True, image.size == (size, size) and image.mode == "RGB"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False, False


def _all_image_facts(paths: set[Path], size: int, workers: int | None = None) -> dict[Path, tuple[bool, bool, bool]]:
    """(exists, decodes, is size x size RGB) per image, each decoded once, on every core: PIL
    releases the GIL while it decodes, so threads suffice."""
    def facts(path: Path) -> tuple[bool, bool, bool]:
        return (True, *_image_facts(path, size)) if path.is_file() else (False, False, False)

    ordered = sorted(paths)
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        return dict(zip(ordered, pool.map(facts, ordered)))


def records_frame(records: list[Record] | list[dict], image_root: Path, split: str, image_size: int = 384,
                  workers: int | None = None) -> pd.DataFrame:
    rows = [record.model_dump() if isinstance(record, Record) else dict(record) for record in records]
    paths = [image_root / str(row.get("image", "")) for row in rows]
    image_facts = _all_image_facts(set(paths), image_size, workers)
    for row, path in zip(rows, paths):
        options = row.get("options") or {}
        texts = [str(text).strip() for text in options.values()]
        exists, decodes, sized = image_facts[path]
        row.update(
            split=split,
            option_count=len(options),
            answer_in_options=row.get("answer") in options,
            options_lettered=list(options) == list(LETTERS[: len(options)]),
            options_filled=all(texts),
            options_distinct=len(set(texts)) == len(texts),
            image_exists=exists,
            image_decodes=decodes,
            image_is_square_rgb=sized,
        )
    return pd.DataFrame(rows)


def add_split_facts(frame: pd.DataFrame) -> pd.DataFrame:
    """Facts about a row among its split: is its image also on the other side (leakage), and how
    large a share of its split has its answer letter and its modality (class balance; none for a
    row of unknown modality, which is no modality whose share could be too large)."""
    frame = frame.copy()
    if frame.empty or not {"split", "image_sha256", "answer", "modality"} <= set(frame.columns):
        return frame
    sides = frame.groupby("image_sha256")["split"].transform("nunique")
    frame["image_in_both_splits"] = sides > 1
    for column in ("answer", "modality"):
        frame[f"{column}_share"] = (frame.groupby(["split", column])[column].transform("size")
                                    / frame.groupby("split")[column].transform("size"))
    frame.loc[frame["modality"] == UNKNOWN, "modality_share"] = None
    return frame


def splits_frame(data: Path, image_size: int = 384, workers: int | None = None) -> pd.DataFrame:
    """The train and test records of an ingested folder, with their per-record facts, in one frame."""
    frames = []
    for split in ("train", "test"):
        path = data / f"{split}.jsonl"
        rows = json_lines(path.read_text(encoding="utf-8")) if path.is_file() else []
        frames.append(records_frame(rows, data, split, image_size, workers))
    return pd.concat(frames, ignore_index=True)


def _suite(gx, min_rows_per_modality: int, max_answer_share: float, max_modality_share: float,
           shared_images: str = "fail"):
    E = gx.expectations
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    for column in REQUIRED_COLUMNS:
        suite.add_expectation(E.ExpectColumnToExist(column=column))
        suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(E.ExpectColumnValuesToBeUnique(column="question_id"))
    # UNKNOWN: a Med-R1 split record that the other family's files do not label (counted in the summary)
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="modality", value_set=[*MODALITIES, UNKNOWN]))
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="question_type",
                                                        value_set=[*QUESTION_TYPES, UNKNOWN]))
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="answer", value_set=list(LETTERS)))
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(column="option_count", min_value=2, max_value=len(LETTERS)))
    for flag in ("answer_in_options", "options_lettered", "options_filled", "image_exists", "image_decodes",
                 "image_is_square_rgb"):
        suite.add_expectation(E.ExpectColumnValuesToBeInSet(column=flag, value_set=[True]))
    # Repeated option texts ("A)SPECT, B)SPECT, ...") are Med-R1's records as published, graded by letter:
    # evaluated and counted (mostly 0), never failing
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="options_distinct", value_set=[True], mostly=0.0))
    # shared_images "report": still evaluated and counted, never failing (mostly 0)
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="image_in_both_splits", value_set=[False],
                                                        mostly=1.0 if shared_images == "fail" else 0.0))
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(column="answer_share", max_value=max_answer_share))
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(column="modality_share", max_value=max_modality_share))
    suite.add_expectation(E.ExpectColumnValueLengthsToEqual(column="image_sha256", value=64))
    suite.add_expectation(E.ExpectTableRowCountToBeBetween(min_value=max(1, min_rows_per_modality)))
    return suite


def run_checks(frame: pd.DataFrame, min_rows_per_modality: int = 1, max_answer_share: float = 1.0,
               max_modality_share: float = 1.0, data_docs: Path | None = None, shared_images: str = "fail") -> dict:
    """Run the suite as a checkpoint over `frame`; returns a JSON-able summary. With `data_docs`,
    GX's Data Docs HTML site of the run is written into that folder. `shared_images`: "fail" (an
    image in both splits fails the checks) or "report" (counted in the summary only)."""
    frame = add_split_facts(frame)
    outcomes = run_checkpoint(
        frame, lambda gx: _suite(gx, min_rows_per_modality, max_answer_share, max_modality_share, shared_images),
        "records", {"result_format": "COMPLETE", "unexpected_index_column_names": ["question_id"]}, data_docs)
    expectations = []
    for outcome in outcomes:
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
    too_small = {m: int(per_modality.get(m, 0)) for m in MODALITIES  # UNKNOWN is no modality: no minimum
                 if 0 < per_modality.get(m, 0) < min_rows_per_modality}
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
        "shared_images": (int(frame.loc[frame["image_in_both_splits"], "image_sha256"].nunique())
                          if "image_in_both_splits" in frame else 0),
        "repeated_options": int((~frame["options_distinct"]).sum()) if "options_distinct" in frame else 0,
        "unknown": {column: int((frame[column] == UNKNOWN).sum()) if column in frame else 0
                    for column in ("modality", "question_type")},
    }


def check_ingested(data: Path, params: Params, data_docs: Path | None = None) -> dict:
    """The checkpoint over an ingested folder with params.yaml's thresholds: what the validate
    stage runs, and what the Prefect flow runs before every pipeline run."""
    thresholds = params.validate_
    return run_checks(splits_frame(data, params.ingest.image_size), thresholds.min_rows_per_modality,
                      thresholds.max_answer_share, thresholds.max_modality_share, data_docs=data_docs,
                      shared_images=thresholds.shared_images)


def describe_failures(summary: dict) -> str:
    lines = [(f"data checks failed: {len(summary['failed'])} of {summary['evaluated_expectations']} expectations "
              f"over {summary['rows']} rows")]
    for failure in summary["failed"]:
        column = f" on {failure['column']}" if failure["column"] else ""
        lines.append(f"  - {failure['expectation']}{column}: {failure['unexpected_count']} offending row(s)")
        if failure["examples"]:
            lines.append(f"      e.g. {', '.join(failure['examples'])}")
    return "\n".join(lines)
