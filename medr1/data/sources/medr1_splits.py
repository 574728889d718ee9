"""Reader of Med-R1's split files: `<family>/<side>/<name>_<side>.json`, lists of
`{image, problem, solution}`.

`family` is `modality` or `question_type`; the file name carries that label, verbatim with
its typos ("MR (Mag-netic Resonance Imaging)_train.json"). The other label is not in the
record: it is recovered from the other family's files, which hold the same question
(same image, same problem). A record whose other label cannot be recovered is dropped with
that reason, like every other record the reader refuses.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from medr1.data.records import LETTERS, QUESTION_TYPES
from medr1.data.sources.base import Dropped, SourceItem, existing_image, json_list
from medr1.data.sources.omnimedvqa import canonical_modality
from medr1.errors import MissingFileError, PipelineError

FAMILIES = ("modality", "question_type")
SIDES = ("train", "test")
_ANSWER = re.compile(r"<answer>\s*([A-F])\s*</answer>")
_FIRST_OPTION = re.compile(r"(?:^|\s)A\)")


def parse_problem(problem: str) -> tuple[str, dict[str, str]] | None:
    """'Which organ? A)Liver, B)Lung (left), C)Heart, D)Brain' -> ('Which organ?', {A: Liver, ...}).

    Option texts may contain commas and parentheses: each option ends only where ", <next
    letter>)" begins. None when fewer than two options are found.
    """
    first = _FIRST_OPTION.search(problem)
    if first is None:
        return None
    question = problem[: first.start()].strip()
    cursor = first.end()
    options: dict[str, str] = {}
    for index, letter in enumerate(LETTERS):
        following = LETTERS[index + 1] if index + 1 < len(LETTERS) else None
        end = problem.find(f", {following})", cursor) if following else -1
        options[letter] = (problem[cursor:] if end < 0 else problem[cursor:end]).strip()
        if end < 0:
            break
        cursor = end + len(f", {following})")
    return (question, options) if len(options) >= 2 else None


def label_of(family: str, file: Path) -> str | None:
    """The canonical modality or question type that a split file's name carries."""
    name = re.sub(r"_(train|test)$", "", file.stem)
    if family == "modality":
        return canonical_modality(name)
    return name if name in QUESTION_TYPES else None


def split_files(root: Path, family: str) -> list[Path]:
    return sorted(file for side in SIDES for file in (root / family / side).glob("*.json"))


def _index(root: Path, family: str, per_file: Counter | None, dropped: Dropped) -> dict[tuple[str, str], str]:
    """(image, problem) -> this family's label, over all of the family's readable files (whose
    record counts go into `per_file` too: a check reports every file of the folder, and every
    file it cannot read, whose labels are then missing)."""
    index = {}
    for file in split_files(root, family):
        label = label_of(family, file)
        entries = json_list(file, dropped, "problem", f"{family}/{file.parent.name}/{file.name}")
        if per_file is not None:
            per_file[f"{family}/{file.parent.name}/{file.name}"] += len(entries)
        if label is None:
            continue
        for entry in entries:
            if isinstance(entry, dict):
                index[(str(entry.get("image")), str(entry.get("problem")))] = label
    return index


def read_medr1_splits(root: Path, family: str, dropped: Dropped, per_file: Counter | None = None,
                      images_root: Path | None = None) -> Iterator[SourceItem]:
    """Records of one family's files, each with its side ("train"/"test") kept in `split`.

    Image paths ("Images/<dataset>/...") are relative to `images_root`, the OmniMedVQA folder
    (default: `root` itself, with Images/ beside modality/ and question_type/).
    """
    root = Path(root)
    images_root = Path(images_root) if images_root is not None else root
    if family not in FAMILIES:
        raise PipelineError(f"medr1-splits family must be one of {FAMILIES}, got {family!r}")
    files = split_files(root, family)
    if not files:
        raise MissingFileError(f"no Med-R1 split files in {root}/{family}/{{train,test}}/: expected <name>_<side>.json")
    other = FAMILIES[1 - FAMILIES.index(family)]
    other_labels = _index(root, other, per_file, dropped)
    for file in files:
        side = file.parent.name
        label = label_of(family, file)
        entries = json_list(file, dropped, "problem", f"{family}/{side}/{file.name}")
        if per_file is not None:
            per_file[f"{family}/{side}/{file.name}"] += len(entries)
        for position, entry in enumerate(entries):
            where = f"{family}/{side}/{file.name}[{position}]"
            if label is None:
                dropped.add(f"unknown {family} in file name {file.stem!r}", where)
                continue
            item = _item(images_root, entry, where, family, label, other_labels, side, dropped)
            if item is not None:
                yield item


def _item(root, entry, where, family, label, other_labels, side, dropped) -> SourceItem | None:
    if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) and entry.get(key)
                                              for key in ("image", "problem", "solution")):
        dropped.add("record lacks image, problem or solution", where)
        return None
    parsed = parse_problem(entry["problem"])
    if parsed is None or not parsed[0]:
        dropped.add("problem has no question and at least two options A), B)", where)
        return None
    question, options = parsed
    if any(not text for text in options.values()) or len(set(options.values())) != len(options):
        dropped.add("options are empty or repeated", where)
        return None
    answer = _ANSWER.search(entry["solution"])
    if answer is None or answer.group(1) not in options:
        dropped.add("solution's <answer> letter is not among the options", where)
        return None
    other_label = other_labels.get((entry["image"], entry["problem"]))
    if other_label is None:
        missing = "question_type" if family == "modality" else "modality"
        dropped.add(f"{missing} unknown: the question is in no {missing} file", where)
        return None
    modality, question_type = (label, other_label) if family == "modality" else (other_label, label)
    image_path = existing_image(root, entry["image"], where, dropped)
    if image_path is None:
        return None
    digest = hashlib.sha256(f"{entry['image']}\n{entry['problem']}".encode()).hexdigest()[:16]
    parts = Path(entry["image"]).parts
    return SourceItem(
        question_id=f"medr1-{digest}",
        dataset=parts[1] if len(parts) > 2 and parts[0] == "Images" else parts[0],
        modality=modality,
        question_type=question_type,
        question=question,
        options=options,
        answer=answer.group(1),
        image_path=image_path,
        split=side,
        where=where,
    )
