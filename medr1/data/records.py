"""The normalized record every source yields and every check validates, and its vocabularies."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, Field, field_validator, model_validator

from medr1.errors import DataError, MissingFileError

MODALITIES = ("CT", "MRI", "X-Ray", "Ultrasound", "Dermoscopy", "Fundus", "OCT", "Microscopy")
QUESTION_TYPES = (
    "Modality Recognition",
    "Anatomy Identification",
    "Disease Diagnosis",
    "Lesion Grading",
    "Other Biological Attributes",
)
LETTERS = ("A", "B", "C", "D", "E", "F")
# The modality or question type of a record whose source does not give it: Med-R1's split files
# label a question only by the file it is in, so a question in no file of the other family has
# one label of its own and this for the other. It is counted as a group of its own everywhere,
# never a group to train or test on (study groups, min_rows_per_modality and the modality share
# leave it out), and no synthetic or OmniMedVQA record has it.
UNKNOWN = "unknown"
FAMILIES = {"modality": MODALITIES, "question_type": QUESTION_TYPES}  # a record field -> its groups


def family_of(group: str) -> str:
    """The record field that `group` is a value of ("CT" -> modality); a ValueError naming the vocabularies."""
    for family, groups in FAMILIES.items():
        if group in groups:
            return family
    raise ValueError(f"{group!r} is neither a modality ({', '.join(MODALITIES)}) nor a question type "
                     f"({', '.join(QUESTION_TYPES)})")


class Record(BaseModel):
    """One multiple-choice question about one image (one line of a split's JSONL)."""

    question_id: str = Field(min_length=1)
    dataset: str = Field(min_length=1)
    modality: str
    question_type: str
    question: str = Field(min_length=1)
    options: dict[str, str]
    answer: str
    image: str = Field(min_length=1, description="path relative to the processed root")
    image_sha256: str = Field(min_length=64, max_length=64)

    @field_validator("modality")
    @classmethod
    def _known_modality(cls, value: str) -> str:
        if value not in (*MODALITIES, UNKNOWN):
            raise ValueError(f"modality {value!r} is not one of {', '.join(MODALITIES)} (or {UNKNOWN!r})")
        return value

    @field_validator("question_type")
    @classmethod
    def _known_question_type(cls, value: str) -> str:
        if value not in (*QUESTION_TYPES, UNKNOWN):
            raise ValueError(f"question_type {value!r} is not one of {', '.join(QUESTION_TYPES)} (or {UNKNOWN!r})")
        return value

    @model_validator(mode="after")
    def _answer_among_options(self) -> Record:
        letters = list(self.options)
        if not 2 <= len(letters) <= len(LETTERS) or letters != list(LETTERS[: len(letters)]):
            raise ValueError(f"options must be lettered A.. consecutively (2 to 6), got {letters}")
        if self.answer not in self.options:
            raise ValueError(f"answer {self.answer!r} is not among the options {letters}")
        return self

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]


def write_jsonl(records: Iterable[Record], path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record.model_dump_json() + "\n")
            count += 1
    return count


def json_lines(text: str) -> list[dict]:
    """Every non-blank line of a JSON Lines text, parsed, unvalidated (predictions, or records a check inspects
    as they are)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_jsonl(path: Path) -> Iterator[Record]:
    if not Path(path).is_file():
        raise MissingFileError(f"no split file {path}: `dvc repro ingest` writes the splits under data/processed/")
    with Path(path).open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield Record.model_validate(json.loads(line))
                except ValueError as error:  # invalid JSON, or a field the schema refuses
                    raise DataError(f"{path}:{line_number}: {error}") from error
