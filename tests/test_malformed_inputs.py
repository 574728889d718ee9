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
from medr1.data.sources.medr1_splits import MALFORMED_REASONS

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
        "blank-question": (entry("blank-question", question="   "),
                           "invalid question: String should have at least 1 character"),
        "blank-option": (entry("blank-option", option_B="  "), "gt_answer matches no option"),
        "image-path-number": (entry("image-path-number", image_path=7), "image file not found"),
        "image-folder": (entry("image-folder", image_path="Images/Set"), "image file not found"),
    }
    qa = root / "QA_information" / "Open-access"
    qa.mkdir(parents=True)
    good = [entry(f"good-{name}", image_path=f"Images/Set/{name}")
            for name in ("ok (1).png", "deep.tif", "print.jpg", "palette.png")]
    (qa / "Set.json").write_text(json.dumps(good + [record for record, _ in cases.values()] + ["not a record"]))
    (qa / "Broken.json").write_text('[{"question_id": "cut-off"}, {"question_id": "lost", ')
    (qa / "Object.json").write_text('{"question_id": "not-a-list"}')
    (qa / "Latin.json").write_bytes(json.dumps([entry("accent-1"), entry("accent-2"), entry("accent-3")])
                                    .replace("What", "Qu\u00e9").encode("latin-1"))
    expected = {qid: reason for qid, (_, reason) in cases.items()}
    expected["Set.json[26]"] = "record is not an object"
    return expected


UNREADABLE = {"Broken.json": ("file is not valid JSON", 2), "Object.json": ("file is not a JSON list", 1),
              "Latin.json": ("file is not UTF-8 text", 3)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("corpus") / "source"
    root.mkdir()
    return root, build_corpus(root)


def test_every_malformed_input_is_refused_with_its_reason(corpus, tmp_path):
    root, expected = corpus
    assert len(expected) + len(UNREADABLE) >= 25
    summary = ingest(root, tmp_path / "out", 384, 0.5, 0, progress=False, accept_unreadable_files=True)
    refused = [json.loads(line) for line in (tmp_path / "out" / "dropped.jsonl").read_text().splitlines()]
    records = [entry for entry in refused if "record" in entry]
    for case, reason in expected.items():
        matching = [entry for entry in records if f"question_id={case}" in entry["record"] or case in entry["record"]]
        assert [entry["reason"] for entry in matching] == [reason], case
        assert "Set.json[" in matching[0]["record"], case  # the file and position, not only the id
    files = {entry["file"]: (entry["reason"].split(":")[0], entry["questions"]) for entry in refused if "file" in entry}
    assert files == UNREADABLE
    assert summary["dropped_total"] == len(expected) + sum(questions for _, questions in UNREADABLE.values())
    assert summary["records"] == 4  # the good one plus the 16-bit, CMYK and palette images, converted on purpose
    for line in ((tmp_path / "out" / "train.jsonl").read_text().splitlines()
                 + (tmp_path / "out" / "test.jsonl").read_text().splitlines()):
        with Image.open(tmp_path / "out" / json.loads(line)["image"]) as image:
            assert image.size == (384, 384) and image.mode == "RGB"


def test_medr1_check_on_the_corpus_names_problems_without_a_traceback(corpus, tmp_path):
    root, _ = corpus
    result = subprocess.run([sys.executable, "-m", "medr1.cli", "check", "omnimedvqa", str(root)],
                            capture_output=True, text=True, check=False, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1  # without --strict: the unreadable files fail it, the rest is still checked
    assert "Traceback" not in output
    for reason in ("image too large to decode safely", "image path escapes the data root",
                   "cannot read Broken.json: file is not valid JSON", "about 3 questions"):
        assert reason in output


def test_an_unreadable_file_stops_the_ingest_naming_it_and_writes_nothing(corpus, tmp_path):
    from medr1.errors import DataError

    root, _ = corpus
    with pytest.raises(DataError) as error:
        ingest(root, tmp_path / "out", 384, 0.5, 0, progress=False)
    message = str(error.value)
    for name, (reason, questions) in UNREADABLE.items():
        assert f"{name} ({reason}" in message and f"about {questions} questions" in message, name
    assert "ingest.accept_unreadable_files" in message
    assert not (tmp_path / "out").exists()  # stopped before any image or split was written


def _splits_record(image: str, problem: str, letter: str) -> dict:
    return {"image": image, "problem": problem, "solution": f"<answer> {letter} </answer>"}


def build_splits_corpus(root: Path) -> dict[str, str]:
    """Med-R1's Splits/ layout with one malformed record per case, each at its own position of
    CT_train.json; returns 'file[index]' -> the reason expected."""
    images = root / "Images" / "Set"
    images.mkdir(parents=True)
    Image.new("RGB", (64, 48), (40, 80, 120)).save(images / "ok.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    ok = "Images/Set/ok.png"
    cases = [
        (_splits_record(ok, "Which organ? A)Brain, B)Lung", "C"),
         "solution's <answer> letter is not among the options"),
        ({"image": ok, "problem": "Which organ? A)Brain, B)Lung", "solution": "A"},
         "solution's <answer> letter is not among the options"),
        (_splits_record(ok, "Which organ is it?", "A"), "problem has no question and at least two options A), B)"),
        (_splits_record(ok, "Which organ? A)Brain", "A"), "problem has no question and at least two options A), B)"),
        (_splits_record(ok, "   A)Brain, B)Lung", "A"), "problem has no question and at least two options A), B)"),
        (_splits_record(ok, "Which side? A)left, B), C)right", "A"), "an option has no text"),
        ("a bare string", "record lacks image, problem or solution"),
        ({"image": ok, "problem": "Which organ? A)Brain, B)Lung"}, "record lacks image, problem or solution"),
        ({"image": 5, "problem": "Which organ? A)Brain, B)Lung", "solution": "<answer>A</answer>"},
         "record lacks image, problem or solution"),
        (_splits_record("../outside.png", "Which organ? A)Brain, B)Lung", "A"), "image path escapes the data root"),
        (_splits_record("/etc/hostname", "Which organ? A)Brain, B)Lung", "A"), "image path escapes the data root"),
        (_splits_record("Images/Set/none.png", "Which organ? A)Brain, B)Lung", "A"), "image file not found"),
        (_splits_record("Images/Set/broken.png", "Which organ? A)Brain, B)Lung", "A"), "image does not decode"),
    ]
    good = [_splits_record(ok, f"Which organ {i}? A)Brain, B)Lung", "A") for i in range(4)]
    kept = [_splits_record(ok, "Which side? A)left, B)left", "A"),  # repeated option texts: graded by letter
            _splits_record(ok, "Asked in no question-type file? A)x, B)y", "A")]  # question_type unknown
    labelled = good + [record for record, _ in cases if isinstance(record, dict)] + kept[:1]
    files = {"modality/train/CT(Computed Tomography)_train.json": good + [record for record, _ in cases] + kept,
             "modality/train/Sonar_train.json": good[:1],
             "question_type/train/Anatomy Identification_train.json": labelled}
    for name, records in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(records))
    (root / "modality/test").mkdir()
    (root / "modality/test/CT(Computed Tomography)_test.json").write_text(
        json.dumps(good[:2])[:-5])  # cut off mid-record
    expected = {f"CT(Computed Tomography)_train.json[{len(good) + i}]": reason for i, (_, reason) in enumerate(cases)}
    expected["Sonar_train.json[0]"] = "unknown modality in file name 'Sonar_train'"
    return expected


def test_every_malformed_split_record_is_refused_at_its_position(tmp_path):
    root = tmp_path / "splits"
    expected = build_splits_corpus(root)
    untested = {"image too large to decode safely", "image cannot be read"}  # the image readers' own tests
    assert set(MALFORMED_REASONS) - untested <= set(expected.values())  # every documented rule, once at least
    summary = ingest(root, tmp_path / "out", 384, 0.5, 0, progress=False, kind="medr1-splits",
                     accept_unreadable_files=True)
    refused = [json.loads(line) for line in (tmp_path / "out" / "dropped.jsonl").read_text().splitlines()]
    for where, reason in expected.items():
        assert [entry["reason"] for entry in refused if where in entry.get("record", "")] == [reason], where
    assert [(entry["file"], entry["questions"]) for entry in refused if "file" in entry] == [
        ("modality/test/CT(Computed Tomography)_test.json", 2)]
    assert summary["records"] == 6 and summary["dropped_total"] == len(expected) + 2
    assert summary["question_type"]["unknown"] == {"train": 1, "test": 0}
    assert summary["per_file"]["modality/train/CT(Computed Tomography)_train.json"]["kept"] == 6
