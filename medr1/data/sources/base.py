"""What every source reader shares: the item a reader yields, the record of what it dropped,
and the safe ways to read a question file and find an image inside the source root."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


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
    where: str = ""  # the record's file and position, for the message that drops it later
    source_file: str = ""  # the question file it was read from, as records_per_file names it


@dataclass
class Dropped:
    """Every record the readers refused, with its reason, and every file they could not read at all."""

    every: list[tuple[str, str]] = field(default_factory=list)  # (reason, record)
    files: list[dict] = field(default_factory=list)  # {"file", "reason", "questions"}: unreadable files
    by_file: Counter = field(default_factory=Counter)  # (question file, reason) -> records dropped

    def add(self, reason: str, where: str, file: str = "") -> None:
        """Drop the record at `where`; `file` (the question file it was read from) counts it per file too."""
        self.every.append((reason, where))
        if file:
            self.by_file[(file, reason)] += 1

    def unreadable(self, file: str, reason: str, questions: int) -> None:
        self.files.append({"file": file, "reason": reason, "questions": questions})

    @property
    def total(self) -> int:
        """Questions lost: the records dropped, and those an unreadable file held."""
        return len(self.every) + sum(entry["questions"] for entry in self.files)

    def describe_files(self) -> str:
        return "; ".join(f"{entry['file']} ({entry['reason']}; it holds about {entry['questions']} questions)"
                         for entry in self.files)

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


def json_list(file: Path, dropped: Dropped, question_key: str, name: str | None = None) -> list:
    """The JSON list a question file holds, or [] with the file recorded as unreadable in `dropped`,
    saying why and about how many questions it held (its `question_key` keys, counted in the raw bytes)."""
    raw = file.read_bytes()
    try:
        entries = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        reason = f"file is not UTF-8 text: {error}"
    except json.JSONDecodeError as error:
        reason = f"file is not valid JSON: {error}"
    else:
        if isinstance(entries, list):
            return entries
        reason = "file is not a JSON list"
    dropped.unreadable(name or file.name, reason, raw.count(f'"{question_key}"'.encode()))
    return []


def safe_image_path(root: Path, relative: str) -> Path | None:
    """The image's absolute path, or None when it would escape the data root."""
    if not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
        return None
    resolved = (root / relative).resolve()
    return resolved if resolved.is_relative_to(root.resolve()) else None


def existing_image(root: Path, relative: str, where: str, dropped: Dropped, file: str = "") -> Path | None:
    """The image's absolute path when it is a file inside the root; otherwise drop the record saying why."""
    image_path = safe_image_path(root, relative)
    if image_path is None:
        dropped.add("image path escapes the data root", where, file)
    elif not image_path.is_file():
        dropped.add("image file not found", where, file)
        image_path = None
    return image_path
