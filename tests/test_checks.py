import json

import pandas as pd

from medr1.checks import describe_failures, records_frame, run_checks


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
    assert isinstance(frame, pd.DataFrame)
