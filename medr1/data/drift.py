"""Drift: new processed data against the training data of a registered version (docs/drift.md).

The reference is what a version learned from: the `data/processed` folder its manifest names by
DVC md5 (lineage), read from the local DVC cache or fetched from the DVC remote. The new data's
train split is compared with it, one Great Expectations expectation per check, with thresholds from
the reference: KL divergence of the modality, question-type, answer-letter and options-per-question
shares; the relative change of the mean question length, image grey level and image side before the
resize; and the share of the new test split's images that the reference trained on. Each check has
a threshold and an action in params.yaml `validate.drift`: `fail` stops the run, `report` only reports.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from medr1.data.gx_checkpoint import run_checkpoint
from medr1.data.images import default_workers
from medr1.data.ingest import ORIGINAL_SIZES
from medr1.data.records import json_lines
from medr1.errors import PipelineError

if TYPE_CHECKING:
    from medr1.config import DriftParams, Params
    from medr1.registry.store import ObjectStore

SUITE_NAME = "medr1_drift"
PROCESSED = "data/processed"
# check -> (column, how it is compared); categorical: KL divergence of the shares; mean: relative change
CATEGORICAL = {"modality_share": "modality", "question_type_share": "question_type", "answer_share": "answer",
               "option_count": "option_count"}
MEANS = {"question_length": "question_words", "image_intensity": "image_mean_intensity",
         "image_size": "original_side"}
SEEN = "seen_images"
CHECKS = (*CATEGORICAL, *MEANS, SEEN)
TRAIN_SPLIT = "train"  # the rows whose distributions are compared with the reference's train split


class DriftError(PipelineError):
    """The reference data cannot be found or read; the message says what to do."""


@dataclass
class Reference:
    """The training data of a registered version: its files by path inside data/processed."""

    name: str
    version: str
    alias: str | None
    data_md5: str | None
    files: dict[str, Path] = field(repr=False)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" + (f" ({self.alias})" if self.alias else "")


# --- the reference: lineage -> DVC cache -> DVC remote ------------------------------------------

def processed_md5(manifest: dict) -> str:
    """The DVC md5 of the data/processed folder the version was trained on, from its lineage."""
    for entry in manifest.get("data") or []:
        if (entry.get("path") or "").removeprefix("./").rstrip("/") == PROCESSED and entry.get("md5"):
            return entry["md5"]
    raise DriftError(f"version {manifest.get('version')} records no {PROCESSED} in its lineage (manifest `data`): "
                     "it was not registered by the pipeline's register stage, so its training data is unknown")


def _listing(path: Path) -> list[dict] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def dvc_files(repo: Path, md5: str, fetch: bool = True) -> dict[str, Path]:
    """{relpath: file in the DVC cache} of the folder DVC hashed as `md5` (a `.dir` hash): read from
    the local cache, else fetched (the folder's listing and files) from the repository's default
    DVC remote with DVC's own transfer, as `dvc fetch` does."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc_data.hashfile.hash_info import HashInfo

    if not md5.endswith(".dir"):
        raise DriftError(f"{md5} is not the DVC hash of a folder (a .dir hash)")
    try:
        dvc = Repo(str(repo))
    except DvcException as error:
        raise DriftError(f"{repo} is not a DVC repository ({error}): run from the pipeline's checkout") from error
    with dvc:
        cache = dvc.cache.local

        def local() -> dict[str, Path] | None:
            entries = _listing(Path(cache.oid_to_path(md5)))
            if entries is None:
                return None
            files = {entry["relpath"]: Path(cache.oid_to_path(entry["md5"])) for entry in entries}
            return files if all(path.is_file() for path in files.values()) else None

        files = local()
        if files is not None or not fetch:
            if files is None:
                raise DriftError(f"the reference data {md5} is not in the local DVC cache {cache.path}")
            return files
        try:  # the folder's listing first, then the files it lists (DVC's transfer does not expand a listing)
            result = dvc.cloud.pull([HashInfo("md5", md5)])
            entries = _listing(Path(cache.oid_to_path(md5)))
            if entries is not None:
                result = dvc.cloud.pull([HashInfo("md5", entry["md5"]) for entry in entries])
        except DvcException as error:
            raise DriftError(
                f"the reference data {PROCESSED} {md5} is not in the local DVC cache and cannot be fetched: {error}. "
                "Configure the DVC remote the version was pushed to (`dvc remote add -d ...`, README), or check "
                "out the version's git commit and `dvc pull data/processed`") from error
        files = local()
        if files is None:
            raise DriftError(f"the DVC remote lacks the reference data {PROCESSED} {md5} "
                             f"({len(result.failed)} object(s) failed): was the version's run pushed (`dvc push`)?")
        return files


def resolve_reference(store: ObjectStore, name: str, against: str, repo: Path, fetch: bool = True) -> Reference | None:
    """The version `against` names (an alias of `name`, or a version id or its prefix) with its training
    data; None when it is an alias that points at no version yet (nothing to compare with)."""
    from medr1.registry.promotion import ALIASES, aliases
    from medr1.registry.versions import find_version

    version = aliases(store, name).get((name, against))
    if version is None and against in ALIASES:
        return None
    manifest = find_version(store, version or against)
    md5 = processed_md5(manifest)
    return Reference(name=manifest["name"], version=manifest["version"], alias=against if version else None,
                     data_md5=md5, files=dvc_files(repo, md5, fetch=fetch))


def folder_files(folder: Path) -> dict[str, Path]:
    """A processed folder on disk as a reference's file map (tests, `medr1 check` on two folders)."""
    return {path.relative_to(folder).as_posix(): path for path in folder.rglob("*") if path.is_file()}


# --- profiles --------------------------------------------------------------------------------

def _read_jsonl(path: Path | None) -> list[dict]:
    if path is None or not path.is_file():
        return []
    return json_lines(path.read_text(encoding="utf-8"))


def _mean_intensity(path: Path | None) -> float | None:
    try:
        with Image.open(path) as image:
            return float(np.asarray(image.convert("L"), dtype=np.float32).mean())
    except (OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError):
        return None


def records_frame(files: dict[str, Path], image_sample: int, reference_images: set[str] | None = None,
                  workers: int | None = None) -> pd.DataFrame:
    """One row per record of train and test, with what the checks compare: options per question,
    question length in words, and on one row per image of the train split (at most `image_sample`
    images, a fixed choice by content hash) its mean grey level and side before the resize; with
    `reference_images`, on one row per test image whether the reference trained on it."""
    rows = []
    for split in ("train", "test"):
        for record in _read_jsonl(files.get(f"{split}.jsonl")):
            rows.append({"split": split, "question_id": record.get("question_id"),
                         "modality": record.get("modality"), "question_type": record.get("question_type"),
                         "answer": record.get("answer"), "option_count": len(record.get("options") or {}),
                         "question_words": len(str(record.get("question", "")).split()),
                         "image": record.get("image"), "image_sha256": record.get("image_sha256")})
    frame = pd.DataFrame(rows, columns=["split", "question_id", "modality", "question_type", "answer", "option_count",
                                        "question_words", "image", "image_sha256"])
    first = ~frame.duplicated(["split", "image_sha256"])
    train_images = frame[first & (frame["split"] == "train")].sort_values("image_sha256").head(image_sample)
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:  # PIL decodes without the GIL
        intensities = list(pool.map(_mean_intensity, [files.get(image) for image in train_images["image"]]))
    frame["image_mean_intensity"] = pd.Series(intensities, index=train_images.index, dtype="float64")
    sizes = json.loads(files[ORIGINAL_SIZES].read_text()) if ORIGINAL_SIZES in files else {}
    sides = [math.sqrt(sizes[image][0] * sizes[image][1]) if image in sizes else None
             for image in train_images["image"]]
    frame["original_side"] = pd.Series(sides, index=train_images.index, dtype="float64")
    if reference_images is not None:
        test_images = frame[first & (frame["split"] == "test")]
        frame["image_seen_in_reference"] = pd.Series(test_images["image_sha256"].isin(reference_images),
                                                     index=test_images.index, dtype="object")
    return frame


def _shares(values: pd.Series) -> dict:
    counts = values.dropna().value_counts().sort_index()
    total = int(counts.sum())
    return {"values": [value.item() if hasattr(value, "item") else value for value in counts.index],  # JSON-able
            "weights": [int(n) / total for n in counts] if total else []}


def _summary_of(values: pd.Series) -> dict:
    values = values.dropna().astype(float)
    if values.empty:
        return {"n": 0}
    quantiles = values.quantile([0.05, 0.5, 0.95])
    return {"n": len(values), "mean": round(float(values.mean()), 4), "p05": round(float(quantiles[0.05]), 4),
            "p50": round(float(quantiles[0.5]), 4), "p95": round(float(quantiles[0.95]), 4)}


def profile(frame: pd.DataFrame) -> dict:
    """What the checks compare, of a frame's train split: {check: shares (values, weights) or a summary (n,
    mean, quantiles)}; of its test split, the images (for the seen-images check)."""
    train = frame[frame["split"] == "train"]
    shares = {check: _shares(train[column]) for check, column in CATEGORICAL.items()}
    means = {check: _summary_of(train[column]) for check, column in MEANS.items()}
    return {**shares, **means, "rows": len(train),
            "images": {"train": int(train["image_sha256"].nunique()),
                       "test": int(frame.loc[frame["split"] == "test", "image_sha256"].nunique())}}


# --- the checks as a GX checkpoint ------------------------------------------------------------

def _suite(gx, reference: dict, params: DriftParams):
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations
    train_rows = Column("split") == TRAIN_SPLIT  # a Condition: GX 1.9 deprecated the string form, 2.0 removes it
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    expectations = {}
    for check, column in CATEGORICAL.items():
        shares = reference[check]
        if shares["values"]:
            expectations[check] = E.ExpectColumnKLDivergenceToBeLessThan(
                column=column, partition_object={"values": shares["values"], "weights": shares["weights"]},
                threshold=getattr(params, check).threshold, row_condition=train_rows, meta={"check": check})
    for check, column in MEANS.items():
        mean = reference[check].get("mean")
        if mean:
            tolerance = getattr(params, check).threshold
            expectations[check] = E.ExpectColumnMeanToBeBetween(
                column=column, min_value=mean * (1 - tolerance), max_value=mean * (1 + tolerance),
                row_condition=train_rows, meta={"check": check})
    expectations[SEEN] = E.ExpectColumnValuesToBeInSet(
        column="image_seen_in_reference", value_set=[False], mostly=max(0.0, 1 - params.seen_images.threshold),
        meta={"check": SEEN})
    for expectation in expectations.values():
        suite.add_expectation(expectation)
    return suite


def _validate(frame: pd.DataFrame, reference: dict, params: DriftParams, data_docs: Path | None) -> dict[str, dict]:
    """{check: GX's result} of the checkpoint over the new data (Data Docs in `data_docs`)."""
    results = run_checkpoint(frame, lambda gx: _suite(gx, reference, params), "drift", {"result_format": "SUMMARY"},
                             data_docs)
    outcomes = {}
    for outcome in results:
        config = outcome.expectation_config
        outcomes[(config.meta or {}).get("check")] = {
            "expectation": config.type, "column": config.kwargs.get("column"), "success": bool(outcome.success),
            "result": outcome.result or {},
            "error": (outcome.exception_info or {}).get("exception_message") or None,
        }
    return outcomes


def _finite(value) -> float | None:
    return round(float(value), 6) if value is not None and math.isfinite(float(value)) else None


def _linf(reference: dict, new: dict) -> float:
    """The largest difference of one value's share (TFX's L-infinity distance), reported beside the KL."""
    ref, now = dict(zip(reference["values"], reference["weights"])), dict(zip(new["values"], new["weights"]))
    return round(max((abs(ref.get(v, 0.0) - now.get(v, 0.0)) for v in {*ref, *now}), default=0.0), 6)


def compare(new_files: dict[str, Path], reference: Reference, params: DriftParams,
            data_docs: Path | None = None, data: dict | None = None) -> dict:
    """Every check of `params` on the new data against the reference; a JSON-able summary whose
    `success` is false only when a check with action `fail` failed."""
    reference_frame = records_frame(reference.files, params.image_sample)
    reference_profile = profile(reference_frame)
    reference_train_images = set(reference_frame.loc[reference_frame["split"] == "train", "image_sha256"])
    new_frame = records_frame(new_files, params.image_sample, reference_images=reference_train_images)
    new_profile = profile(new_frame)
    if not reference_profile["rows"]:
        raise DriftError(f"the reference data of {reference.label} has no train records")
    outcomes = _validate(new_frame, reference_profile, params, data_docs)
    checks = []
    for check in CHECKS:
        setting = getattr(params, check)
        outcome = outcomes.get(check)
        entry = {"check": check, "action": setting.action, "threshold": setting.threshold,
                 "expectation": outcome["expectation"] if outcome else None,
                 "column": outcome["column"] if outcome else None}
        details = (outcome or {}).get("result", {})
        if check in CATEGORICAL:
            entry.update(statistic_name="KL divergence (nats)", reference=reference_profile[check],
                         new=new_profile[check], linf=_linf(reference_profile[check], new_profile[check]))
            entry["statistic"] = _finite(details.get("observed_value"))
            if outcome and details.get("observed_value") is None and not outcome["success"]:
                entry["note"] = "infinite: the new data has a value the reference never had"
        elif check in MEANS:
            ref_mean, new_mean = reference_profile[check].get("mean"), new_profile[check].get("mean")
            entry.update(statistic_name="relative change of the mean", reference=reference_profile[check],
                         new=new_profile[check])
            entry["statistic"] = (round(abs(new_mean / ref_mean - 1), 6) if ref_mean and new_mean is not None
                                  else None)
            if outcome is None:
                entry["note"] = "the reference records no values (data ingested before it was recorded)"
        else:
            seen = new_frame.get("image_seen_in_reference", pd.Series(dtype="object")).dropna()
            share = float(seen.astype(bool).mean()) if len(seen) else 0.0
            entry.update(statistic_name="share of new test images in the reference's train split",
                         reference={"train_images": reference_profile["images"]["train"]},
                         new={"test_images": len(seen), "seen": int(seen.astype(bool).sum())},
                         statistic=round(share, 6))
        if outcome is None:
            entry["passed"] = None
        elif outcome["error"]:
            entry.update(passed=False, note=f"the expectation raised: {outcome['error']}")
        else:
            entry["passed"] = outcome["success"]
        checks.append(entry)
    failed = [c["check"] for c in checks if c["passed"] is False and c["action"] == "fail"]
    reported = [c["check"] for c in checks if c["passed"] is False and c["action"] == "report"]
    return {
        "success": not failed,
        "reference": {"name": reference.name, "version": reference.version, "alias": reference.alias,
                      "data_md5": reference.data_md5, "rows": reference_profile["rows"]},
        "data": {**(data or {}), "rows": new_profile["rows"]},
        "failed": failed,
        "reported": reported,
        "checks": checks,
    }


def describe(summary: dict, only: list[str] | None = None) -> str:
    """The failed (or the named) checks, each with its statistic, threshold and both distributions."""
    reference = summary["reference"]
    label = f"{reference['name']} {reference['version']}" + (f" ({reference['alias']})" if reference["alias"] else "")
    names = summary["failed"] + summary["reported"] if only is None else only
    lines = [(f"drift against {label}'s training data ({reference['rows']} train rows; new data "
              f"{summary['data']['rows']} train rows):")]
    for check in summary["checks"]:
        if check["check"] not in names:
            continue
        statistic = "inf" if check["statistic"] is None and check.get("note", "").startswith("infinite") \
            else check["statistic"]
        lines.append(f"  - {check['check']} ({check['action']}): {check['statistic_name']} {statistic} > "
                     f"threshold {check['threshold']}; reference {distribution_text(check['reference'])}; "
                     f"new {distribution_text(check['new'])}" + (f" [{check['note']}]" if check.get("note") else ""))
    return "\n".join(lines)


def distribution_text(value: dict) -> str:
    if "values" in value:
        return "{" + ", ".join(f"{v}: {w:.3f}" for v, w in zip(value["values"], value["weights"])) + "}"
    return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"


def check_drift(data: Path, params: Params, repo: Path, against: str | None = None, store: ObjectStore | None = None,
                data_docs: Path | None = None, data_md5: str | None = None) -> dict | None:
    """The drift checks of params.yaml over an ingested folder against `against` (default
    validate.drift.against) of register.name in register.store: None when there is nothing to compare
    with (no `against`, or an alias that points at no version yet), else compare's summary."""
    from medr1.registry.backends import open_store

    against = against if against is not None else params.validate_.drift.against
    if against is None:
        return None
    store = store or open_store(params.register_.store, base=repo)
    reference = resolve_reference(store, params.register_.name, against, repo)
    if reference is None:
        return None
    return compare(folder_files(data), reference, params.validate_.drift, data_docs=data_docs,
                   data={"path": str(data), "md5": data_md5})
