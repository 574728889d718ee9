"""Med-R1's split files: options parsed out of `problem`, labels from file names, drops named."""

import json
from pathlib import Path

from PIL import Image

from medr1.data.sources.base import Dropped
from medr1.data.sources.medr1_splits import parse_problem, read_medr1_splits


def test_parse_problem_keeps_commas_and_parentheses_inside_options():
    question, options = parse_problem("What stage is shown? "
                                      "A)Stage IIIa (left, upper lobe), B)No, not a tumour, C)T2 N0")
    assert question == "What stage is shown?"
    assert options == {"A": "Stage IIIa (left, upper lobe)", "B": "No, not a tumour", "C": "T2 N0"}
    assert parse_problem("No options here") is None
    assert parse_problem("Only one? A)yes") is None


def _record(image: str, problem: str, letter: str) -> dict:
    return {"image": image, "problem": problem, "solution": f"<answer> {letter} </answer>"}


def write_splits_folder(root: Path) -> None:
    """A small Splits/ folder with Med-R1's verbatim file names and placeholder images."""
    good = [
        _record(f"Images/Brain MRI/case ({i}).png",
                f"Which organ is this {i}? A)Brain, B)Liver (left lobe), C)Lung", "A")
        for i in range(6)
    ]
    bad = [
        _record("Images/Brain MRI/case (0).png", "Which grade? A)I, B)II", "C"),  # letter not among options
        _record("../outside.png", "Which organ? A)Brain, B)Lung", "A"),  # escapes the root
        _record("Images/Brain MRI/missing.png", "Which organ? A)Brain, B)Lung", "B"),  # no such image
        _record("Images/Brain MRI/case (1).png", "Which side? A)left, B)left", "A"),  # repeated options
        _record("Images/Brain MRI/case (2).png", "Never asked by question type? A)x, B)y", "A"),  # no question_type
    ]
    files = {
        "modality/train/MR (Mag-netic Resonance Imaging)_train.json": good[:4] + bad,
        "modality/test/MR (Mag-netic Resonance Imaging)_test.json": good[4:],
        "modality/train/unknown_train.json": good[:1],
        "question_type/train/Anatomy Identification_train.json": good[:4] + bad[:4],
        "question_type/test/Anatomy Identification_test.json": good[4:],
    }
    for name, records in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(records))
    for i in range(6):
        path = root / f"Images/Brain MRI/case ({i}).png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (10 * i, 20, 30)).save(path)


def test_reader_recovers_both_labels_and_names_every_drop(tmp_path):
    write_splits_folder(tmp_path)
    dropped = Dropped()
    items = list(read_medr1_splits(tmp_path, "modality", dropped))
    assert len(items) == 6
    assert {(item.modality, item.question_type) for item in items} == {("MRI", "Anatomy Identification")}
    assert sorted(item.split for item in items).count("test") == 2
    assert items[0].options["B"] == "Liver (left lobe)" and items[0].dataset == "Brain MRI"
    assert dropped.counts == {
        "solution's <answer> letter is not among the options": 1,
        "image path escapes the data root": 1,
        "image file not found": 1,
        "options are empty or repeated": 1,
        "question_type unknown: the question is in no question_type file": 1,
        "unknown modality in file name 'unknown_train'": 1,
    }
    assert all(where.startswith("modality/") for _, where in dropped.every)


def test_medr1_check_reports_per_file_counts_and_fails_only_on_checks(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medr1.cli.app import app

    write_splits_folder(tmp_path / "splits")
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # no params.yaml here: default thresholds
    result = CliRunner().invoke(app, ["check", "medr1-splits", str(tmp_path / "splits"), "--out", str(out), "--json",
                                      "--keep-source-split"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ingest"]["records_per_file"]["modality/train/MR (Mag-netic Resonance Imaging)_train.json"] == 9
    assert report["ingest"]["train"] == 4 and report["ingest"]["test"] == 2
    assert report["ingest"]["dropped_total"] == 6
    assert len((out / "dropped.jsonl").read_text().splitlines()) == 6
    strict = CliRunner().invoke(app, ["check", "medr1-splits", str(tmp_path / "splits"), "--strict"])
    assert strict.exit_code == 1 and isinstance(strict.exception, SystemExit)  # an exit, not an uncaught error
    assert "Traceback" not in strict.output and "image path escapes the data root" in strict.output
