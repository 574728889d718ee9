"""A corpus of malformed inputs: each one is refused with its named reason, none raises, and the
usable records around them still go through. Deliberate conversions (16-bit, CMYK, palette) are
accepted, not refused."""

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medr1.data.ingest import ingest

GOOD = {"dataset": "Set", "question_type": "Disease Diagnosis", "question": "What is shown?", "gt_answer": "Tumor",
        "option_A": "Cyst", "option_B": "Tumor", "modality_type": "CT(Computed Tomography)"}


def _png_bomb(path: Path, side: int = 20_000) -> None:
    """A valid PNG header that claims side x side pixels (PIL's bomb guard must stop it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    header = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def build_corpus(root: Path) -> dict[str, str]:
    """Write an OmniMedVQA folder of malformed inputs; returns question_id -> the reason expected."""
    images = root / "Images" / "Set"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images / "ok (1).png")
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 255, 200, dtype=np.uint8)))
    (images / "truncated.png").write_bytes((images / "ok (1).png").read_bytes()[:300])
    (images / "empty.png").write_bytes(b"")
    (images / "notes.png").write_text("this is a text file")
    _png_bomb(images / "bomb.png")
    Image.fromarray((rng.integers(0, 65535, (40, 40))).astype(np.uint16)).save(images / "deep.tif")
    Image.new("CMYK", (40, 40), (0, 120, 200, 10)).save(images / "print.jpg")
    Image.new("P", (40, 40)).save(images / "palette.png")
    outside = root.parent / "outside.png"
    Image.new("RGB", (8, 8)).save(outside)
    os.symlink(outside, images / "link.png")

    def entry(qid, **changes):
        record = {**GOOD, "question_id": qid, "image_path": "Images/Set/ok (1).png", **changes}
        return {k: v for k, v in record.items() if v is not None}

    cases = {
        "corrupt": (entry("corrupt", image_path="Images/Set/corrupt.png"), "image does not decode"),
        "truncated": (entry("truncated", image_path="Images/Set/truncated.png"), "image does not decode"),
        "empty-file": (entry("empty-file", image_path="Images/Set/empty.png"), "image does not decode"),
        "not-an-image": (entry("not-an-image", image_path="Images/Set/notes.png"), "image does not decode"),
        "bomb": (entry("bomb", image_path="Images/Set/bomb.png"), "image too large to decode safely"),
        "missing-image": (entry("missing-image", image_path="Images/Set/nothing.png"), "image file not found"),
        "dotdot": (entry("dotdot", image_path="Images/../../outside.png"), "image path escapes the data root"),
        "absolute": (entry("absolute", image_path=str(outside)), "image path escapes the data root"),
        "symlink-out": (entry("symlink-out", image_path="Images/Set/link.png"), "image path escapes the data root"),
        "answer-not-option": (entry("answer-not-option", gt_answer="Abscess"), "gt_answer matches no option"),
        "answer-twice": (entry("answer-twice", option_A="Tumor"), "gt_answer matches several options"),
        "empty-question": (entry("empty-question", question=""), "missing field(s): question"),
        "no-answer": (entry("no-answer", gt_answer=None), "missing field(s): gt_answer"),
        "no-modality": (entry("no-modality", modality_type=None), "missing field(s): modality_type"),
        "unknown-modality": (entry("unknown-modality", modality_type="PET"), "unknown modality 'PET'"),
        "unknown-type": (entry("unknown-type", question_type="Prognosis"), "unknown question_type 'Prognosis'"),
        "one-option": (entry("one-option", option_B=None, gt_answer="Cyst"),
                       "options are not 2 or more consecutive letters from A"),
        "gap-in-options": (entry("gap-in-options", option_B=None, option_C="Tumor"),
                           "options are not 2 or more consecutive letters from A"),
    }
    qa = root / "QA_information" / "Open-access"
    qa.mkdir(parents=True)
    good = [entry(f"good-{name}", image_path=f"Images/Set/{name}")
            for name in ("ok (1).png", "deep.tif", "print.jpg", "palette.png")]
    (qa / "Set.json").write_text(json.dumps(good + [record for record, _ in cases.values()] + ["not a record"]))
    (qa / "Broken.json").write_text('[{"question_id": "cut-off", ')
    (qa / "Object.json").write_text('{"question_id": "not-a-list"}')
    expected = {qid: reason for qid, (_, reason) in cases.items()}
    expected.update({"Set.json[22]": "record is not an object", "Broken.json": "file is not valid JSON",
                     "Object.json": "file is not a JSON list"})
    return expected


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("corpus") / "source"
    root.mkdir()
    return root, build_corpus(root)


def test_every_malformed_input_is_refused_with_its_reason(corpus, tmp_path):
    root, expected = corpus
    assert len(expected) >= 20
    summary = ingest(root, tmp_path / "out", 384, 0.5, 0, progress=False)
    refused = [json.loads(line) for line in (tmp_path / "out" / "dropped.jsonl").read_text().splitlines()]
    for case, reason in expected.items():
        matching = [entry for entry in refused if case in entry["record"]]
        assert [entry["reason"] for entry in matching] == [reason], case
    assert summary["dropped_total"] == len(expected)
    assert summary["records"] == 4  # the good one plus the 16-bit, CMYK and palette images, converted on purpose
    for line in ((tmp_path / "out" / "train.jsonl").read_text().splitlines()
                 + (tmp_path / "out" / "test.jsonl").read_text().splitlines()):
        with Image.open(tmp_path / "out" / json.loads(line)["image"]) as image:
            assert image.size == (384, 384) and image.mode == "RGB"


def test_medr1_check_on_the_corpus_names_problems_without_a_traceback(corpus, tmp_path):
    root, _ = corpus
    result = subprocess.run([sys.executable, "-m", "medr1.cli", "check", "omnimedvqa", str(root), "--strict"],
                            capture_output=True, text=True, check=False, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    for reason in ("image too large to decode safely", "image path escapes the data root", "file is not valid JSON"):
        assert reason in output
