"""Med-R1's split files: options parsed out of `problem`, labels from file names, drops named."""

import json
from pathlib import Path

from PIL import Image

from medr1.data.records import UNKNOWN
from medr1.data.sources.base import Dropped
from medr1.data.sources.medr1_splits import is_malformed, parse_problem, read_medr1_splits


def test_parse_problem_keeps_commas_and_parentheses_inside_options():
    question, options = parse_problem("What stage is shown? "
                                      "A)Stage IIIa (left, upper lobe), B)No, not a tumour, C)T2 N0")
    assert question == "What stage is shown?"
    assert options == {"A": "Stage IIIa (left, upper lobe)", "B": "No, not a tumour", "C": "T2 N0"}
    assert parse_problem("No options here") is None
    assert parse_problem("Only one? A)yes") is None


def _record(image: str, problem: str, letter: str) -> dict:
    return {"image": image, "problem": problem, "solution": f"<answer> {letter} </answer>"}


MRI_TRAIN = "modality/train/MR (Mag-netic Resonance Imaging)_train.json"
MRI_TEST = "modality/test/MR (Mag-netic Resonance Imaging)_test.json"
REPEATED = _record("Images/Brain MRI/case (1).png", "Which side? A)left, B)left, C)right", "C")
UNLABELLED = _record("Images/Brain MRI/case (2).png", "Never asked by question type? A)x, B)y", "A")
IN_UNKNOWN_FILE = _record("Images/Brain MRI/case (5).png", "What imaging technique? A)CT, B)MRI", "B")


def write_splits_folder(root: Path) -> None:
    """A small Splits/ folder with Med-R1's verbatim file names and placeholder images: six good
    questions, one with repeated option texts, one in no question-type file, one asked twice in a
    file, one on both sides, Med-R1's unknown_train.json, and one malformed record per rule."""
    good = [
        _record(f"Images/Brain MRI/case ({i}).png",
                f"Which organ is this {i}? A)Brain, B)Liver (left lobe), C)Lung", "A")
        for i in range(6)
    ]
    bad = [
        _record("Images/Brain MRI/case (0).png", "Which grade? A)I, B)II", "C"),  # letter not among options
        _record("../outside.png", "Which organ? A)Brain, B)Lung", "A"),  # escapes the root
        _record("Images/Brain MRI/missing.png", "Which organ? A)Brain, B)Lung", "B"),  # no such image
        _record("Images/Brain MRI/case (3).png", "Which organ? A)Brain, B), C)Lung", "A"),  # an option without text
        {"image": "Images/Brain MRI/case (3).png", "problem": "Which organ? A)Brain, B)Lung"},  # no solution
        _record("Images/Brain MRI/case (3).png", "Which organ is it?", "A"),  # no options
    ]
    files = {
        MRI_TRAIN: good[:4] + [REPEATED, UNLABELLED, good[0]] + bad,
        MRI_TEST: good[4:] + [good[1]],
        "modality/train/unknown_train.json": [IN_UNKNOWN_FILE],  # Med-R1's, one record
        "question_type/train/Anatomy Identification_train.json": good[:4] + [REPEATED] + bad,
        "question_type/test/Anatomy Identification_test.json": good[4:] + [IN_UNKNOWN_FILE],
    }
    for name, records in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(records))
    for i in range(6):
        path = root / f"Images/Brain MRI/case ({i}).png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (10 * i, 20, 30)).save(path)


MALFORMED = {
    "solution's <answer> letter is not among the options": 1,
    "image path escapes the data root": 1,
    "image file not found": 1,
    "an option has no text": 1,
    "record lacks image, problem or solution": 1,
    "problem has no question and at least two options A), B)": 1,
}


def test_reader_keeps_every_record_but_the_malformed_and_names_each_drop(tmp_path):
    write_splits_folder(tmp_path)
    dropped = Dropped()
    items = list(read_medr1_splits(tmp_path, "modality", dropped))
    assert dropped.counts == MALFORMED
    assert all(is_malformed(reason) for reason in dropped.counts)
    assert all(where.startswith(f"{MRI_TRAIN}[") for _, where in dropped.every)
    assert dropped.by_file == {(MRI_TRAIN, reason): count for reason, count in MALFORMED.items()}
    by_problem = {}
    for item in items:
        by_problem.setdefault(item.question, []).append(item)
    assert len(items) == 4 + 3 + 3 + 1  # MRI train: 4 good + repeated + unlabelled + a repeat; test 3; unknown 1
    repeated = by_problem["Which side?"][0]
    assert repeated.options == {"A": "left", "B": "left", "C": "right"} and repeated.answer == "C"
    assert (repeated.modality, repeated.question_type) == ("MRI", "Anatomy Identification")
    unlabelled = by_problem["Never asked by question type?"][0]
    assert (unlabelled.modality, unlabelled.question_type) == ("MRI", UNKNOWN)
    from_unknown_file = [item for item in items if item.source_file == "modality/train/unknown_train.json"]
    assert [(item.modality, item.question_type) for item in from_unknown_file] == [(UNKNOWN, "Anatomy Identification")]
    assert len({item.question_id for item in items}) == len(items)  # repeats get ids of their own
    asked_twice = by_problem["Which organ is this 0?"]
    assert [item.split for item in asked_twice] == ["train", "train"]
    assert asked_twice[1].question_id == f"{asked_twice[0].question_id}-2"
    on_both_sides = by_problem["Which organ is this 1?"]
    assert sorted(item.split for item in on_both_sides) == ["test", "train"]
    assert items[0].options["B"] == "Liver (left lobe)" and items[0].dataset == "Brain MRI"


def test_question_type_family_gets_unknown_modality_where_the_modality_files_give_none(tmp_path):
    write_splits_folder(tmp_path)
    (tmp_path / "question_type/test/Lesion Grading_test.json").write_text(json.dumps(
        [_record("Images/Brain MRI/case (4).png", "Asked in no modality file? A)x, B)y", "B")]))
    items = {item.question: item for item in read_medr1_splits(tmp_path, "question_type", Dropped())}
    assert items["What imaging technique?"].modality == UNKNOWN  # only Med-R1's unknown_train.json holds it
    assert (items["Asked in no modality file?"].modality, items["Asked in no modality file?"].question_type) == (
        UNKNOWN, "Lesion Grading")
    assert items["Which side?"].modality == "MRI" and items["Which organ is this 5?"].modality == "MRI"


def test_a_question_two_files_label_differently_gets_unknown(tmp_path):
    write_splits_folder(tmp_path)
    (tmp_path / "modality/test/X-Ray_test.json").write_text(json.dumps([REPEATED]))
    items = list(read_medr1_splits(tmp_path, "question_type", Dropped()))
    assert {item.modality for item in items if item.question == "Which side?"} == {UNKNOWN}


def test_medr1_check_reports_per_file_records_kept_and_dropped_by_reason(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medr1.cli.app import app
    from medr1.cli.common import console

    write_splits_folder(tmp_path / "splits")
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # no params.yaml here: default thresholds
    result = CliRunner().invoke(app, ["check", "medr1-splits", str(tmp_path / "splits"), "--out", str(out), "--json",
                                      "--keep-source-split", "--shared-images", "report"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    summary = report["ingest"]
    assert summary["per_file"] == {
        MRI_TEST: {"records": 3, "kept": 3, "dropped": {}},
        MRI_TRAIN: {"records": 13, "kept": 7, "dropped": dict(sorted(MALFORMED.items()))},
        "modality/train/unknown_train.json": {"records": 1, "kept": 1, "dropped": {}},
    }
    assert summary["records_per_file"]["question_type/train/Anatomy Identification_train.json"] == 11
    assert summary["train"] == 8 and summary["test"] == 3 and summary["dropped_total"] == 6
    assert summary["modality"][UNKNOWN] == {"train": 1, "test": 0}
    assert summary["question_type"][UNKNOWN] == {"train": 1, "test": 0}
    assert not (out / "splits" / "modality" / "train" / f"{UNKNOWN}.jsonl").exists()  # no group to train on
    assert (out / "splits" / "modality" / "train" / "MRI.jsonl").is_file()
    validation = report["validation"]
    assert validation["success"] and validation["unknown"] == {"modality": 1, "question_type": 1}
    assert validation["shared_images"] == 2  # Med-R1's sides share images: counted, not failing
    assert validation["repeated_options"] == 1
    named = [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
    assert sorted(entry["reason"] for entry in named) == sorted(MALFORMED)
    # the console's width is fixed when medr1.cli.common is first imported (COLUMNS then): wide enough for a row a line
    monkeypatch.setattr(console, "width", 200)
    table = CliRunner().invoke(app, ["check", "medr1-splits", str(tmp_path / "splits"), "--keep-source-split",
                                     "--shared-images", "report"])
    assert table.exit_code == 0, table.output
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:6]]
            for line in table.output.splitlines() if line.count("│") == 6 and ".json" in line}
    assert rows[MRI_TRAIN] == ["13", "7", "6", "1 an option has no text"]  # reasons go on, one per line
    assert rows["question_type/train/Anatomy Identification_train.json"] == ["11", "-", "-",
                                                                            "read for its labels only"]
    strict = CliRunner().invoke(app, ["check", "medr1-splits", str(tmp_path / "splits"), "--strict"])
    assert strict.exit_code == 1 and isinstance(strict.exception, SystemExit)  # an exit, not an uncaught error
    assert "Traceback" not in strict.output and "image path escapes the data root" in strict.output
