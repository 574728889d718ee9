import json
import os
import shutil
from collections import Counter

import pandas as pd

from medr1.data.checks import describe_failures, records_frame, run_checks


def _frame(processed):
    rows = [json.loads(line) for line in (processed / "train.jsonl").read_text().splitlines()]
    return rows, records_frame(rows, processed, "train")


def test_clean_records_pass(processed):
    _, frame = _frame(processed)
    summary = run_checks(frame, min_rows_per_modality=1)
    assert summary["success"], describe_failures(summary)
    assert summary["evaluated_expectations"] >= 20


def test_bad_records_fail_naming_expectation_and_question(processed):
    rows, _ = _frame(processed)
    rows = [dict(row) for row in rows[:10]]
    rows[0]["answer"] = "D" if "D" not in rows[0]["options"] else "F"
    rows[1]["image"] = "images/missing.png"
    rows[2]["modality"] = "PET"
    rows[3]["question_id"] = rows[4]["question_id"]
    summary = run_checks(records_frame(rows, processed, "train"))
    assert not summary["success"]
    failed = {(f["expectation"], f["column"]): f for f in summary["failed"]}
    assert failed[("expect_column_values_to_be_in_set", "answer_in_options")]["examples"] == [rows[0]["question_id"]]
    assert failed[("expect_column_values_to_be_in_set", "image_exists")]["examples"] == [rows[1]["question_id"]]
    assert failed[("expect_column_values_to_be_in_set", "modality")]["unexpected_count"] == 1
    assert failed[("expect_column_values_to_be_unique", "question_id")]["unexpected_count"] == 2
    text = describe_failures(summary)
    assert "image_exists" in text and rows[1]["question_id"] in text


def test_min_rows_per_modality(processed):
    _, frame = _frame(processed)
    summary = run_checks(frame, min_rows_per_modality=10_000)
    assert not summary["success"]
    assert any(f["expectation"] == "min_rows_per_modality" for f in summary["failed"])


def test_missing_column_fails(processed):
    _, frame = _frame(processed)
    summary = run_checks(frame.drop(columns=["answer"]))
    assert not summary["success"]
    missing = {f["column"] for f in summary["failed"] if f["expectation"] == "expect_column_to_exist"}
    assert missing == {"answer"}, summary["failed"]


def test_leakage_balance_options_and_image_size_are_checked(processed, tmp_path):
    from PIL import Image

    rows, _ = _frame(processed)
    # the session's `processed` stays as ingest wrote it: the small image goes into a linked copy
    processed = shutil.copytree(processed, tmp_path / "processed", copy_function=os.symlink)
    one_per_image = list({row["image_sha256"]: row for row in rows}.values())
    train = [dict(row) for row in one_per_image[:12]]
    test = [dict(row) for row in one_per_image[12:24]]
    test[0]["image"], test[0]["image_sha256"] = train[0]["image"], train[0]["image_sha256"]  # same image on both sides
    train[1]["options"] = {"A": "CT", "B": "CT"}  # repeated texts: Med-R1's records have them, counted only
    train[1]["answer"] = "A"
    train[3]["options"] = {"A": "CT", "B": ""}
    train[3]["answer"] = "A"
    Image.new("L", (100, 80)).save(processed / "images" / "small.png")
    train[2]["image"] = "images/small.png"
    frame = pd.concat([records_frame(train, processed, "train"), records_frame(test, processed, "test")],
                      ignore_index=True)
    summary = run_checks(frame, max_answer_share=0.2, data_docs=tmp_path / "docs")
    failed = {f["column"]: f for f in summary["failed"]}
    assert failed["image_in_both_splits"]["unexpected_count"] == 2
    assert set(failed["image_in_both_splits"]["examples"]) == {train[0]["question_id"], test[0]["question_id"]}
    assert failed["options_filled"]["examples"] == [train[3]["question_id"]]
    assert "options_distinct" not in failed and summary["repeated_options"] == 1
    assert failed["image_is_square_rgb"]["examples"] == [train[2]["question_id"]]
    assert "answer_share" in failed  # 12 rows per split cannot keep every letter under 20%
    assert (tmp_path / "docs" / "index.html").is_file()


def test_an_image_in_both_splits_fails_or_is_only_reported(processed):
    rows, train = _frame(processed)
    leaked = [{**row, "question_id": f"{row['question_id']}-test"} for row in rows[:3]]  # same images, test side
    frame = pd.concat([train, records_frame(leaked, processed, "test")], ignore_index=True)
    shared = len({row["image"] for row in rows[:3]})
    failing = run_checks(frame)
    assert not failing["success"] and failing["shared_images"] == shared
    assert any(f["column"] == "image_in_both_splits" for f in failing["failed"])
    reported = run_checks(frame, shared_images="report")  # Med-R1's own split files, kept on purpose
    assert reported["success"], describe_failures(reported)
    assert reported["shared_images"] == shared
    assert run_checks(train)["shared_images"] == 0


def test_unknown_rows_are_counted_without_failing_or_being_a_modality(processed):
    """Med-R1 split records the other family's files do not label: in the value sets, counted in the
    summary, outside min_rows_per_modality and max_modality_share."""
    rows, _ = _frame(processed)
    rows = [dict(row) for row in rows]
    for row in rows[:3]:
        row["modality"] = "unknown"
    for row in rows[3:5]:
        row["question_type"] = "unknown"
    per_modality = Counter(row["modality"] for row in rows if row["modality"] != "unknown")
    assert min(per_modality.values()) > 3  # as a modality, the 3 unknown rows would be under the minimum
    summary = run_checks(records_frame(rows, processed, "train"), min_rows_per_modality=min(per_modality.values()),
                         max_modality_share=max(per_modality.values()) / len(rows))
    assert summary["success"], describe_failures(summary)
    assert summary["unknown"] == {"modality": 3, "question_type": 2}
    for row in rows:  # all unknown: as a modality its share would be 1
        row["modality"] = "unknown"
    everything_unknown = run_checks(records_frame(rows, processed, "train"), max_modality_share=0.1)
    assert everything_unknown["success"], describe_failures(everything_unknown)
    rows[0]["modality"] = "Unknown"  # the one spelling only
    assert not run_checks(records_frame(rows, processed, "train"))["success"]
