"""Ingest: read a source, resize its images in parallel, normalize records, split them."""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from medr1.images import ImageError, process_image
from medr1.records import Record
from medr1.sources.omnimedvqa import Dropped, SourceItem, read_omnimedvqa
from medr1.splits import split_by_image, write_splits


def _process(args: tuple[Path, Path, int]) -> tuple[str, str] | str:
    source, out_folder, size = args
    try:
        return process_image(source, out_folder, size)
    except ImageError as error:
        return str(error)


def ingest(source_root: Path, out: Path, image_size: int, test_fraction: float, seed: int, progress: bool = True) -> dict:
    """Write `out/{train,test}.jsonl`, `out/splits/...`, `out/images/` and return the ingest summary."""
    dropped = Dropped()
    items: list[SourceItem] = list(read_omnimedvqa(source_root, dropped))
    image_folder = out / "images"
    image_folder.mkdir(parents=True, exist_ok=True)
    sources = sorted({item.image_path for item in items})
    workers = max(1, min(os.cpu_count() or 1, 8))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        jobs = [(path, image_folder, image_size) for path in sources]
        results = list(tqdm(pool.map(_process, jobs, chunksize=16), total=len(jobs), desc="images", disable=not progress))
    processed = dict(zip(sources, results))
    records = []
    for item in items:
        result = processed[item.image_path]
        if isinstance(result, str):
            dropped.add(result.split(":")[0], f"{item.question_id} ({item.image_path.relative_to(source_root.resolve())})")
            continue
        digest, name = result
        records.append(
            Record(
                question_id=item.question_id,
                dataset=item.dataset,
                modality=item.modality,
                question_type=item.question_type,
                question=item.question,
                options=item.options,
                answer=item.answer,
                image=f"images/{name}",
                image_sha256=digest,
            )
        )
    if not records:
        raise ValueError(f"no usable records in {source_root}; dropped: {json.dumps(dropped.as_dict(), indent=1)}")
    train, test = split_by_image(records, test_fraction, seed)
    counts = write_splits(train, test, out)
    summary = {"source": str(source_root), "records": len(records), "images": len({r.image_sha256 for r in records})}
    summary.update(counts)
    summary["dropped"] = dropped.as_dict()
    summary["dropped_total"] = sum(dropped.counts.values())
    return summary
