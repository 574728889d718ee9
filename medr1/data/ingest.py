"""Ingest: read a source, resize its images in parallel, normalize records, split them."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image
from pydantic import ValidationError
from tqdm import tqdm

from medr1.data.images import ImageError, default_workers, process_image
from medr1.data.records import Record
from medr1.data.sources.base import Dropped, SourceItem
from medr1.data.sources.medr1_splits import read_medr1_splits
from medr1.data.sources.omnimedvqa import read_omnimedvqa
from medr1.data.splits import split_by_image, write_splits
from medr1.errors import DataError, PipelineError

SOURCE_KINDS = ("synthetic", "omnimedvqa", "medr1-splits")
# {processed image path: [width, height] of its source before the resize}: the drift checks compare
# image sizes, which the resized images no longer show (medr1/data/drift.py)
ORIGINAL_SIZES = "original_sizes.json"


def read_source(kind: str, root: Path, dropped: Dropped, per_file: Counter, family: str = "modality",
                images_root: Path | None = None) -> list[SourceItem]:
    """Every record of the source folder that its reader accepts; the rest land in `dropped`."""
    if kind in ("synthetic", "omnimedvqa"):  # the synthetic set is written in OmniMedVQA's layout
        return list(read_omnimedvqa(root, dropped, per_file))
    if kind == "medr1-splits":
        return list(read_medr1_splits(root, family, dropped, per_file, images_root))
    raise PipelineError(f"unknown source kind {kind!r}: use one of {', '.join(SOURCE_KINDS)}")


def _per_file(record_files: list[str], records_per_file: Counter, kept_per_file: Counter,
              dropped: Dropped) -> dict:
    """{file: {records, kept, dropped: {reason: n}}} for every file read for its records."""
    return {file: {"records": records_per_file.get(file, 0), "kept": kept_per_file.get(file, 0),
                   "dropped": {reason: count for (where, reason), count in sorted(dropped.by_file.items())
                               if where == file}}
            for file in sorted(record_files)}


def _original_size(source: Path) -> list[int] | None:
    """[width, height] from the image's header (PIL opens lazily: no pixel is decoded again)."""
    try:
        with Image.open(source) as image:
            return list(image.size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _process(args: tuple[Path, Path, int, Path | None]) -> tuple[str, str, bool, list[int] | None] | str:
    source, out_folder, size, cache = args
    try:
        return (*process_image(source, out_folder, size, cache), _original_size(source))
    except ImageError as error:
        return str(error)


def ingest(source_root: Path, out: Path, image_size: int, test_fraction: float, seed: int, progress: bool = True,
           kind: str = "omnimedvqa", family: str = "modality", keep_source_split: bool = False,
           images_root: Path | None = None, workers: int | None = None, cache: Path | None = None,
           accept_unreadable_files: bool = False) -> dict:
    """Write `out/{train,test}.jsonl`, `out/splits/...`, `out/images/`, `out/original_sizes.json`,
    `out/dropped.jsonl` (every record refused, with its reason) and return the ingest summary; no splits
    when nothing is usable.

    A source file that cannot be read at all (not UTF-8, not JSON, not a list) stops the ingest
    before anything is written, naming it and about how many questions it holds, unless
    `accept_unreadable_files`: then its questions count as dropped and the summary lists the file.
    """
    dropped, per_file = Dropped(), Counter()
    items = read_source(kind, source_root, dropped, per_file, family, images_root)
    if dropped.files and not accept_unreadable_files:
        raise DataError(f"{len(dropped.files)} source file(s) cannot be read: {dropped.describe_files()}. Repair or "
                        "replace them, or set ingest.accept_unreadable_files: true (medr1 check: "
                        "--accept-unreadable-files) to go on without their questions")
    image_folder = out / "images"
    image_folder.mkdir(parents=True, exist_ok=True)
    sources = sorted({item.image_path for item in items})
    workers = workers or default_workers()
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        jobs = [(path, image_folder, image_size, cache) for path in sources]
        results = list(tqdm(pool.map(_process, jobs, chunksize=16), total=len(jobs), desc="images",
                            disable=not progress))
    processed = dict(zip(sources, results))
    records, sides, kept_per_file, original_sizes = [], [], Counter(), {}
    for item in items:
        result = processed[item.image_path]
        if isinstance(result, str):
            dropped.add(result.split(":")[0], f"{item.where or item.question_id} ({item.image_path})", item.source_file)
            continue
        digest, name, _, original = result
        if original is not None:
            original_sizes.setdefault(f"images/{name}", original)
        try:
            record = Record(question_id=item.question_id, dataset=item.dataset, modality=item.modality,
                            question_type=item.question_type, question=item.question, options=item.options,
                            answer=item.answer, image=f"images/{name}", image_sha256=digest)
        except ValidationError as error:  # whatever the readers let through, the record's schema catches here
            problem = error.errors()[0]
            field_name = ".".join(str(part) for part in problem["loc"]) or "record"
            dropped.add(f"invalid {field_name}: {problem['msg']}", item.where or item.question_id, item.source_file)
            continue
        sides.append(item.split)
        records.append(record)
        kept_per_file[item.source_file] += 1
    # Med-R1's other family's files are read only for their labels: in records_per_file, not in per_file
    record_files = [file for file in per_file if kind != "medr1-splits" or file.startswith(f"{family}/")]
    summary = {"source": str(source_root), "kind": kind, "records_per_file": dict(sorted(per_file.items())),
               "per_file": _per_file(record_files, per_file, kept_per_file, dropped),
               "records": len(records), "images": len({r.image_sha256 for r in records}),
               "images_processed": sum(1 for r in results if not isinstance(r, str) and not r[2]),
               "images_from_cache": sum(1 for r in results if not isinstance(r, str) and r[2])}
    if records:
        if keep_source_split and all(sides):  # Med-R1's own train/test files
            train = [record for record, side in zip(records, sides) if side == "train"]
            test = [record for record, side in zip(records, sides) if side == "test"]
        else:
            train, test = split_by_image(records, test_fraction, seed)
        summary.update(write_splits(train, test, out))
        (out / ORIGINAL_SIZES).write_text(json.dumps(dict(sorted(original_sizes.items()))), encoding="utf-8")
    summary["dropped"] = dropped.as_dict()
    summary["unreadable_files"] = dropped.files
    summary["dropped_total"] = dropped.total
    with (out / "dropped.jsonl").open("w", encoding="utf-8") as handle:  # every dropped record, named
        for entry in dropped.files:
            handle.write(json.dumps(entry) + "\n")
        for reason, where in dropped.every:
            handle.write(json.dumps({"record": where, "reason": reason}) + "\n")
    return summary
