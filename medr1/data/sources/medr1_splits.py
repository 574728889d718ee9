"""Reader of Med-R1's split files: `<family>/<side>/<name>_<side>.json`, lists of
`{image, problem, solution}`.

`family` is `modality` or `question_type`; the file name carries that label, verbatim with
its typos ("MR (Mag-netic Resonance Imaging)_train.json"), and `unknown_<side>.json` (Med-R1
has a one-record `modality/train/unknown_train.json`) carries `unknown`. The other label is not
in the record: it is recovered from the other family's files, which hold the same question
(same image, same problem).

Med-R1 trains and tests on every record of a file, so the reader keeps every record it can
represent and grade:
- a question the other family's files do not label (in none of them, only in an
  `unknown_<side>.json`, or in two with different labels) keeps its own label and gets `unknown`
  (`medr1.data.records.UNKNOWN`) for the other: it belongs to its own family's group, and is
  counted under `unknown` in the other family, never dropped;
- repeated option texts ("A)Stage IIId, B)Stage IIId, ...") are kept: grading is by letter;
- a question asked twice (same image and problem, in one file or in several, on one side or on
  both) is kept as often as it is asked: its question_id is `medr1-` and the first 16 hex digits
  of sha256("<image>\n<problem>"), and each repeat after the first (files in sorted path
  order, records in file order) appends `-2`, `-3`, ...

A record is malformed, and dropped with the reason in quotes (dropped.jsonl names each one), when:
- it is not an object with non-empty string `image`, `problem` and `solution`: "record lacks
  image, problem or solution";
- its problem has no question text before "A)" or fewer than two options: "problem has no
  question and at least two options A), B)";
- an option's text is empty ("A)x, B), C)y"): "an option has no text";
- its solution has no `<answer> X </answer>` whose letter is one of the options: "solution's
  <answer> letter is not among the options";
- its image path is absolute or climbs out of the images folder: "image path escapes the data
  root"; or names no file: "image file not found";
- (at ingest) its image does not decode, or the record's schema refuses it.
A file whose name carries no known label drops each of its records ("unknown <family> in file
name ..."); a file that is not a UTF-8 JSON list is reported as unreadable with about how many
questions it holds.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from medr1.data.records import LETTERS, QUESTION_TYPES, UNKNOWN
from medr1.data.sources.base import Dropped, SourceItem, existing_image, json_list
from medr1.data.sources.omnimedvqa import canonical_modality
from medr1.errors import MissingFileError, PipelineError

FAMILIES = ("modality", "question_type")
SIDES = ("train", "test")
LACKS_FIELDS = "record lacks image, problem or solution"
NO_OPTIONS = "problem has no question and at least two options A), B)"
EMPTY_OPTION = "an option has no text"
ANSWER_NOT_AN_OPTION = "solution's <answer> letter is not among the options"
# Every reason a record of a split file can be dropped for (the docstring's rules): the reader's own,
# the image's (medr1.data.sources.base, medr1.data.images) and, by prefix, the schema's and the file name's
MALFORMED_REASONS = (LACKS_FIELDS, NO_OPTIONS, EMPTY_OPTION, ANSWER_NOT_AN_OPTION, "image path escapes the data root",
                     "image file not found", "image does not decode", "image too large to decode safely",
                     "image cannot be read")
MALFORMED_PREFIXES = ("invalid ", *(f"unknown {family} in file name " for family in FAMILIES))


def is_malformed(reason: str) -> bool:
    """Whether `reason` is one of the documented rules that make a split record malformed."""
    return reason in MALFORMED_REASONS or reason.startswith(MALFORMED_PREFIXES)
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
    if name.casefold() == UNKNOWN:
        return UNKNOWN
    if family == "modality":
        return canonical_modality(name)
    return name if name in QUESTION_TYPES else None


def split_files(root: Path, family: str) -> list[Path]:
    return sorted(file for side in SIDES for file in (root / family / side).glob("*.json"))


def _index(root: Path, family: str, per_file: Counter | None, dropped: Dropped) -> dict[tuple[str, str], str]:
    """(image, problem) -> this family's label, over all of the family's readable files (whose
    record counts go into `per_file` too: a check reports every file of the folder, and every
    file it cannot read, whose labels are then missing). A question two files label differently
    gets UNKNOWN, and so does one only `unknown_<side>.json` holds."""
    labels: dict[tuple[str, str], set[str]] = {}
    for file in split_files(root, family):
        label = label_of(family, file)
        entries = json_list(file, dropped, "problem", _name(family, file))
        if per_file is not None:
            per_file[_name(family, file)] += len(entries)
        if label is None:
            continue
        for entry in entries:
            if isinstance(entry, dict):
                labels.setdefault((str(entry.get("image")), str(entry.get("problem"))), set()).add(label)
    known = {key: found - {UNKNOWN} for key, found in labels.items()}  # an unknown_*.json file labels nothing
    return {key: next(iter(found)) if len(found) == 1 else UNKNOWN for key, found in known.items()}


def _name(family: str, file: Path) -> str:
    """A split file as records_per_file and dropped.jsonl name it: family/side/file name."""
    return f"{family}/{file.parent.name}/{file.name}"


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
    asked: Counter = Counter()  # question digest -> times read so far: a repeat gets an id of its own
    for file in files:
        side, name = file.parent.name, _name(family, file)
        label = label_of(family, file)
        entries = json_list(file, dropped, "problem", name)
        if per_file is not None:
            per_file[name] += len(entries)
        for position, entry in enumerate(entries):
            where = f"{name}[{position}]"
            if label is None:
                dropped.add(f"unknown {family} in file name {file.stem!r}", where, name)
                continue
            item = _item(images_root, entry, where, name, family, label, other_labels, side, dropped)
            if item is not None:
                asked[item.question_id] += 1
                if asked[item.question_id] > 1:
                    item = replace(item, question_id=f"{item.question_id}-{asked[item.question_id]}")
                yield item


def _item(root, entry, where, file, family, label, other_labels, side, dropped) -> SourceItem | None:
    if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) and entry.get(key)
                                              for key in ("image", "problem", "solution")):
        dropped.add(LACKS_FIELDS, where, file)
        return None
    parsed = parse_problem(entry["problem"])
    if parsed is None or not parsed[0]:
        dropped.add(NO_OPTIONS, where, file)
        return None
    question, options = parsed
    if not all(options.values()):
        dropped.add(EMPTY_OPTION, where, file)
        return None
    answer = _ANSWER.search(entry["solution"])
    if answer is None or answer.group(1) not in options:
        dropped.add(ANSWER_NOT_AN_OPTION, where, file)
        return None
    other_label = other_labels.get((entry["image"], entry["problem"]), UNKNOWN)
    modality, question_type = (label, other_label) if family == "modality" else (other_label, label)
    image_path = existing_image(root, entry["image"], where, dropped, file)
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
        source_file=file,
    )
