"""Reader of the OmniMedVQA layout: `QA_information/Open-access/<dataset>.json` + `Images/`.

Every record either becomes a `SourceItem` or is dropped with a reason; nothing is
dropped silently.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from medr1.data.records import LETTERS, QUESTION_TYPES
from medr1.data.sources.base import Dropped, SourceItem, existing_image, json_list
from medr1.errors import MissingFileError

QA_FOLDER = Path("QA_information") / "Open-access"

# Verbatim `modality_type` strings of OmniMedVQA (typos included) by their normalized prefix.
_MODALITY_PREFIXES = (
    ("ct", "CT"),
    ("computedtomography", "CT"),
    ("mr", "MRI"),
    ("magnetic", "MRI"),
    ("xray", "X-Ray"),
    ("ultrasound", "Ultrasound"),
    ("dermoscopy", "Dermoscopy"),
    ("fundus", "Fundus"),
    ("oct", "OCT"),
    ("opticalcoherence", "OCT"),
    ("microscopy", "Microscopy"),
)


def canonical_modality(raw: str) -> str | None:
    """'CT(Computed Tomography)' -> 'CT', 'MR (Mag-netic Resonance Imaging)' -> 'MRI', ...; None if unknown."""
    key = re.sub(r"[^a-z]", "", raw.lower())
    for prefix, name in _MODALITY_PREFIXES:
        if key.startswith(prefix):
            return name
    return None


def normalize_answer_text(text: str) -> str:
    text = text.strip().strip("\"'").strip()
    return re.sub(r"\s+", " ", text.rstrip(".").strip()).casefold()


def read_omnimedvqa(root: Path, dropped: Dropped, per_file: Counter | None = None) -> Iterator[SourceItem]:
    root = Path(root)
    qa_folder = root / QA_FOLDER
    files = sorted(qa_folder.glob("*.json"))
    if not files:
        raise MissingFileError(f"no OmniMedVQA question files in {qa_folder}: expected {QA_FOLDER}/<dataset>.json")
    for qa_file in files:
        entries = json_list(qa_file, dropped, "question_id")
        if per_file is not None:
            per_file[qa_file.name] += len(entries)
        for position, entry in enumerate(entries):
            where = (f"{qa_file.name}[{position}] "
                     f"question_id={entry.get('question_id', '?') if isinstance(entry, dict) else '?'}")
            item = _item(root, entry, where, dropped, qa_file.name)
            if item is not None:
                yield item


def _item(root: Path, entry: object, where: str, dropped: Dropped, file: str) -> SourceItem | None:
    if not isinstance(entry, dict):
        dropped.add("record is not an object", where, file)
        return None
    raw_modality = entry.get("modality_type", entry.get("modality"))  # one real file says "modality"
    missing = [key for key in ("question_id", "dataset", "question_type", "question", "gt_answer", "image_path")
               if not entry.get(key)]
    if raw_modality is None:
        missing.append("modality_type")
    if missing:
        dropped.add(f"missing field(s): {', '.join(missing)}", where, file)
        return None
    modality = canonical_modality(str(raw_modality))
    if modality is None:
        dropped.add(f"unknown modality {raw_modality!r}", where, file)
        return None
    if entry["question_type"] not in QUESTION_TYPES:
        dropped.add(f"unknown question_type {entry['question_type']!r}", where, file)
        return None
    options = {letter: str(entry[f"option_{letter}"]).strip() for letter in LETTERS
               if entry.get(f"option_{letter}") not in (None, "")}
    if list(options) != list(LETTERS[: len(options)]) or len(options) < 2:
        dropped.add("options are not 2 or more consecutive letters from A", where, file)
        return None
    gold = normalize_answer_text(str(entry["gt_answer"]))
    matches = [letter for letter, text in options.items() if normalize_answer_text(text) == gold]
    if len(matches) != 1:
        dropped.add("gt_answer matches no option" if not matches else "gt_answer matches several options", where, file)
        return None
    image_path = existing_image(root, str(entry["image_path"]), where, dropped, file)
    if image_path is None:
        return None
    return SourceItem(
        question_id=str(entry["question_id"]),
        dataset=str(entry["dataset"]),
        modality=modality,
        question_type=entry["question_type"],
        question=str(entry["question"]).strip(),
        options=options,
        answer=matches[0],
        image_path=image_path,
        where=where,
        source_file=file,
    )
