import json
from pathlib import Path

import pytest
from PIL import Image

from medr1.data.records import MODALITIES, QUESTION_TYPES
from medr1.data.sources.base import Dropped
from medr1.data.sources.omnimedvqa import QA_FOLDER, canonical_modality, read_omnimedvqa


def test_synthetic_set_uses_the_omnimedvqa_layout(synthetic_root):
    files = sorted((synthetic_root / QA_FOLDER).glob("*.json"))
    assert len(files) == len(MODALITIES)
    entry = json.loads(files[0].read_text())[0]
    for key in ("dataset", "question_id", "question_type", "question", "gt_answer", "option_A", "option_B",
                "image_path", "modality_type"):
        assert key in entry
    assert entry["image_path"].startswith(f"Images/{entry['dataset']}/")
    with Image.open(synthetic_root / entry["image_path"]) as image:
        assert image.size == (384, 384)


def test_reader_reads_the_synthetic_set_back(synthetic_root):
    dropped = Dropped()
    items = list(read_omnimedvqa(synthetic_root, dropped))
    assert sum(dropped.counts.values()) == 0
    assert len(items) == 8 * 3 * 5
    assert {item.modality for item in items} == set(MODALITIES)
    assert {item.question_type for item in items} == set(QUESTION_TYPES)
    for item in items:
        assert item.answer in item.options


def test_synthetic_is_deterministic(tmp_path):
    from medr1.synthetic.dataset import write_synthetic

    write_synthetic(tmp_path / "a", 1, seed=3, progress=False)
    write_synthetic(tmp_path / "b", 1, seed=3, progress=False)
    for file in (tmp_path / "a").rglob("*"):
        if file.is_file():
            assert file.read_bytes() == (tmp_path / "b" / file.relative_to(tmp_path / "a")).read_bytes()


def test_options_are_shuffled(synthetic_root):
    items = list(read_omnimedvqa(synthetic_root, Dropped()))
    assert len({item.answer for item in items}) >= 3


@pytest.mark.parametrize(
    "raw, canonical",
    [
        ("CT(Computed Tomography)", "CT"),
        ("MR (Mag-netic Resonance Imaging)", "MRI"),
        ("X-Ray", "X-Ray"),
        ("ultrasound", "Ultrasound"),
        ("Fundus Photography", "Fundus"),
        ("OCT (Optical Coherence Tomography", "OCT"),
        ("Microscopy Images", "Microscopy"),
        ("Dermoscopy", "Dermoscopy"),
        ("PET", None),
    ],
)
def test_canonical_modality(raw, canonical):
    assert canonical_modality(raw) == canonical


def _write(root: Path, entries: list[dict]) -> None:
    (root / QA_FOLDER).mkdir(parents=True, exist_ok=True)
    (root / "Images" / "Set").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20)).save(root / "Images" / "Set" / "a (1).png")
    (root / QA_FOLDER / "Set.json").write_text(json.dumps(entries))


def _entry(**changes):
    entry = {"dataset": "Set", "question_id": "q1", "question_type": "Disease Diagnosis", "question": "What?",
             "gt_answer": "Tumor", "option_A": "Cyst", "option_B": "Tumor", "image_path": "Images/Set/a (1).png",
             "modality_type": "CT(Computed Tomography)"}
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def test_reader_quirks_and_drops(tmp_path):
    entries = [
        _entry(),
        _entry(question_id="q2", modality_type=None, modality="MR (Mag-netic Resonance Imaging)",
               gt_answer=' "tumor." '),
        _entry(question_id="q3", gt_answer="Abscess"),
        _entry(question_id="q4", image_path="../outside.png"),
        _entry(question_id="q5", image_path="Images/Set/missing.png"),
        _entry(question_id="q6", modality_type="PET scan"),
    ]
    _write(tmp_path, entries)
    dropped = Dropped()
    items = list(read_omnimedvqa(tmp_path, dropped))
    assert [item.question_id for item in items] == ["q1", "q2"]
    assert items[1].modality == "MRI" and items[1].answer == "B"
    reasons = dropped.as_dict()
    assert reasons["gt_answer matches no option"]["examples"][0].endswith("question_id=q3")
    assert reasons["image path escapes the data root"]["count"] == 1
    assert reasons["image file not found"]["count"] == 1
    assert reasons["unknown modality 'PET scan'"]["count"] == 1
    assert sum(dropped.by_file.values()) == 4 and {file for file, _ in dropped.by_file} == {"Set.json"}
    assert {item.source_file for item in items} == {"Set.json"}  # so ingest counts kept and dropped per file
