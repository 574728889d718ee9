"""A candidate against the version an alias points at now, on the same test questions.

Every version is registered with its predictions on its test split, stored by the split's md5
(`models/<name>/<version>/evaluations/<md5>.jsonl`; the manifest's `evaluation` names split, md5 and
the predictions' sha256). A promotion compares on the candidate's split: the current version's
predictions for that md5 if it has them, else it is re-evaluated on it (the caller's `reevaluate`,
which needs the model code and the data) and those predictions are stored beside its others, so the
same pair is never evaluated twice. The statistics are medr1/evaluate/paired.py's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from medr1.data.records import json_lines
from medr1.evaluate.paired import SLICES, compare_predictions
from medr1.registry.store import ObjectStore
from medr1.registry.versions import EVALUATIONS, RegistryError, version_prefix

if TYPE_CHECKING:
    from medr1.config import ComparisonSettings, PromotionGate

# (current version's manifest, the candidate's split {"path", "md5"}) -> its predictions file on that split
Reevaluate = Callable[[dict, dict], Path]


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluation_record(split: Path, predictions: Path, task: dict) -> dict:
    """The manifest's `evaluation`: which test split (path, md5) the version was tested on, how (task), and the
    sha256 of its predictions there."""
    count = sum(1 for line in predictions.read_text().splitlines() if line.strip())
    return {"split": {"path": split.as_posix(), "md5": md5_of(split)}, "questions": count, "task": task,
            "predictions_sha256": hashlib.sha256(predictions.read_bytes()).hexdigest()}


def evaluation_key(manifest: dict, split_md5: str) -> str:
    return f"{version_prefix(manifest['name'], manifest['version'])}/{EVALUATIONS}/{split_md5}.jsonl"


def _predictions(store: ObjectStore, key: str) -> tuple[list[dict], str]:
    data = store.get_bytes(key)
    return json_lines(data.decode()), hashlib.sha256(data).hexdigest()


def _candidate_predictions(store: ObjectStore, manifest: dict) -> tuple[dict, list[dict], str]:
    evaluation = manifest.get("evaluation")
    if not evaluation:
        raise RegistryError(f"version {manifest['version']} was registered without its test predictions (before "
                            "promotions compared versions): register it again with `dvc repro register`")
    key = evaluation_key(manifest, evaluation["split"]["md5"])
    try:
        predictions, sha256 = _predictions(store, key)
    except KeyError as error:
        raise RegistryError(f"version {manifest['version']}'s test predictions {key} are missing from "
                            f"{store.url}") from error
    if sha256 != evaluation["predictions_sha256"]:
        raise RegistryError(f"{key} has sha256 {sha256[:12]}..., the manifest says "
                            f"{evaluation['predictions_sha256'][:12]}...: the stored predictions were altered")
    return evaluation["split"], predictions, sha256


def _current_predictions(store: ObjectStore, current: dict, split: dict,
                         reevaluate: Reevaluate | None) -> tuple[list[dict], str, bool]:
    """The current version's predictions on `split`, re-evaluated (and stored) when it has none there."""
    key = evaluation_key(current, split["md5"])
    if store.exists(key):
        return (*_predictions(store, key), False)
    if reevaluate is None:
        raise RegistryError(f"version {current['version']} was never tested on the candidate's split "
                            f"({split['path']}, md5 {split['md5']}) and this caller cannot re-evaluate it: promote "
                            "with `medr1 registry promote` in the pipeline's checkout")
    predictions = reevaluate(current, split)
    store.put_if_absent(key, predictions.read_bytes())  # a concurrent re-evaluation wrote the same answers
    return (*_predictions(store, key), True)


def compare_with_current(store: ObjectStore, candidate: dict, current: dict, settings: ComparisonSettings,
                         reevaluate: Reevaluate | None = None) -> dict:
    """The evidence of a promotion: candidate (a) against current (b) on the candidate's test questions,
    overall and per slice, with the split's md5 and both prediction sets' sha256."""
    split, ours, our_sha256 = _candidate_predictions(store, candidate)
    theirs, their_sha256, reevaluated = _current_predictions(store, current, split, reevaluate)
    paired = compare_predictions(ours, theirs, settings.resamples, settings.level, settings.seed)
    return {"current_version": current["version"], "split": split,
            "candidate_predictions_sha256": our_sha256, "current_predictions_sha256": their_sha256,
            "current_reevaluated": reevaluated, "settings": settings.model_dump(), **paired}


def _described(name: str, difference: dict, current: str, level: float) -> str:
    low, high = difference["interval"]
    return (f"{name}: {difference['accuracy_a']:.3f} against {difference['accuracy_b']:.3f} of {current}, difference "
            f"{difference['difference']:+.3f} [{level:.0%} {low:+.3f}, {high:+.3f}], n={difference['n']}, "
            f"McNemar p={difference['mcnemar_p']:.3g}")


def slice_rows(evidence: dict, gate: PromotionGate) -> list[dict]:
    """Every slice with its numbers and what the gate made of it: failed, passed, or too small to judge."""
    rows = []
    for key in SLICES:
        for group, difference in evidence[f"per_{key}"].items():
            judged = difference["n"] >= gate.min_slice_questions
            failed = (judged and gate.max_slice_drop is not None and difference["difference"] < -gate.max_slice_drop
                      and difference["interval"][1] < 0)
            rows.append({"slice": key.replace("_", " "), "group": group, **difference,
                         "outcome": "fails max_slice_drop" if failed else "passes" if judged else
                         f"too small to judge (< {gate.min_slice_questions})"})
    return rows


def comparison_failures(evidence: dict, gate: PromotionGate) -> list[str]:
    """Each comparison gate the candidate fails, naming the numbers and, for slices, each failing slice."""
    current, level, overall = evidence["current_version"], evidence["settings"]["level"], evidence["overall"]
    failures = []
    if gate.must_beat_current:
        low = overall["interval"][0]
        if gate.min_improvement is not None:
            if not (low > 0 and overall["difference"] >= gate.min_improvement):
                failures.append(f"must_beat_current (min_improvement {gate.min_improvement:+.3f}, interval above 0): "
                                + _described("overall", overall, current, level))
        elif not low > -gate.max_drop:
            failures.append(f"must_beat_current (interval above -{gate.max_drop:.3f}): "
                            + _described("overall", overall, current, level))
    for row in slice_rows(evidence, gate):
        if row["outcome"] == "fails max_slice_drop":
            failures.append(f"max_slice_drop {gate.max_slice_drop:.3f}: "
                            + _described(f"{row['slice']} {row['group']}", row, current, level))
    return failures
