"""Reader of the OmniMedVQA layout: `QA_information/Open-access/<dataset>.json` + `Images/`.

Every record either becomes a `SourceItem` or is dropped with a reason; nothing is
dropped silently.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medr1.records import LETTERS, QUESTION_TYPES

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


@dataclass(frozen=True)
class SourceItem:
    question_id: str
    dataset: str
    modality: str
    question_type: str
    question: str
    options: dict[str, str]
    answer: str
    image_path: Path  # absolute, inside the source root
    split: str | None = None  # "train"/"test" when the source fixes it (Med-R1's split files)


@dataclass
class Dropped:
    """Every record the readers refused, with its reason."""

    every: list[tuple[str, str]] = field(default_factory=list)  # (reason, record)

    def add(self, reason: str, where: str) -> None:
        self.every.append((reason, where))

    @property
    def counts(self) -> Counter:
        return Counter(reason for reason, _ in self.every)

    def as_dict(self, examples: int = 5) -> dict:
        """Count and the first few records per reason."""
        summary: dict[str, dict] = {}
        for reason, where in self.every:
            entry = summary.setdefault(reason, {"count": 0, "examples": []})
            entry["count"] += 1
            if len(entry["examples"]) < examples:
                entry["examples"].append(where)
        return summary


def json_list(file: Path, dropped: Dropped) -> list:
    """The JSON list a question file holds, or [] with the file dropped saying why."""
    try:
        entries = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        dropped.add("file is not valid JSON", f"{file.name}: {error}")
        return []
    if not isinstance(entries, list):
        dropped.add("file is not a JSON list", file.name)
        return []
    return entries


def safe_image_path(root: Path, relative: str) -> Path | None:
    """The image's absolute path, or None when it would escape the data root."""
    if not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
        return None
    resolved = (root / relative).resolve()
    return resolved if resolved.is_relative_to(root.resolve()) else None


def existing_image(root: Path, relative: str, where: str, dropped: Dropped) -> Path | None:
    """The image's absolute path when it is a file inside the root; otherwise drop the record saying why."""
    image_path = safe_image_path(root, relative)
    if image_path is None:
        dropped.add("image path escapes the data root", where)
    elif not image_path.is_file():
        dropped.add("image file not found", where)
        image_path = None
    return image_path


def read_omnimedvqa(root: Path, dropped: Dropped, per_file: Counter | None = None) -> Iterator[SourceItem]:
    root = Path(root)
    qa_folder = root / QA_FOLDER
    files = sorted(qa_folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no OmniMedVQA question files in {qa_folder}: expected {QA_FOLDER}/<dataset>.json")
    for qa_file in files:
        entries = json_list(qa_file, dropped)
        if per_file is not None:
            per_file[qa_file.name] += len(entries)
        for position, entry in enumerate(entries):
            where = f"{qa_file.name}[{position}] question_id={entry.get('question_id', '?') if isinstance(entry, dict) else '?'}"
            item = _item(root, entry, where, dropped)
            if item is not None:
                yield item


def _item(root: Path, entry: object, where: str, dropped: Dropped) -> SourceItem | None:
    if not isinstance(entry, dict):
        dropped.add("record is not an object", where)
        return None
    raw_modality = entry.get("modality_type", entry.get("modality"))  # one real file says "modality"
    missing = [key for key in ("question_id", "dataset", "question_type", "question", "gt_answer", "image_path") if not entry.get(key)]
    if raw_modality is None:
        missing.append("modality_type")
    if missing:
        dropped.add(f"missing field(s): {', '.join(missing)}", where)
        return None
    modality = canonical_modality(str(raw_modality))
    if modality is None:
        dropped.add(f"unknown modality {raw_modality!r}", where)
        return None
    if entry["question_type"] not in QUESTION_TYPES:
        dropped.add(f"unknown question_type {entry['question_type']!r}", where)
        return None
    options = {letter: str(entry[f"option_{letter}"]).strip() for letter in LETTERS if entry.get(f"option_{letter}") not in (None, "")}
    if list(options) != list(LETTERS[: len(options)]) or len(options) < 2:
        dropped.add("options are not 2 or more consecutive letters from A", where)
        return None
    gold = normalize_answer_text(str(entry["gt_answer"]))
    matches = [letter for letter, text in options.items() if normalize_answer_text(text) == gold]
    if len(matches) != 1:
        dropped.add("gt_answer matches no option" if not matches else "gt_answer matches several options", where)
        return None
    image_path = existing_image(root, str(entry["image_path"]), where, dropped)
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
    )
