"""The share of outputs a grading protocol could not read, per model in metrics/eval.json, and the
report's flag on a model whose outputs it (almost) never could: Med-R1's SFT under its no-think grading."""

import json
from html import unescape

import pytest
from report_checks import check_numbers, parse

from medr1.data.records import MODALITIES, QUESTION_TYPES, Record
from medr1.evaluate.evaluation import paired_comparisons
from medr1.evaluate.metrics import UNREADABLE_FLAG_SHARE, gain_over_base, grade, summarize
from medr1.report.build import FLAG, build_report
from medr1.report.render import write_report
from medr1.task.grading import PROTOCOLS, grade_output
from medr1.task.spec import TaskSpec

SFT_TARGET = "None\n\n<answer> C </answer>"  # Med-R1's sft.py target for a record without `thinking`

# (protocol, the prompt the output answers, output, readable): gold C, options A-D
CASES = [
    ("strict", "no_think", "<answer>C</answer>", True),
    ("strict", "no_think", "<answer> (c) </answer>", True),
    ("strict", "no_think", SFT_TARGET, True),  # the first answer tag holds a letter
    ("strict", "no_think", "<answer>E</answer>", False),  # not one of the record's letters
    ("strict", "no_think", "C", False),  # no tag
    ("strict", "think_before", "<think>x</think><answer>B</answer>", True),
    ("strict", "zero_shot", "C", False),  # strict reads the tag even when the prompt asked for none
    ("med-r1", "think_before", "<think>x</think><answer> C </answer>", True),
    ("med-r1", "think_before", "<answer>CT</answer>", True),  # a word in the tag: read, and compared
    ("med-r1", "think_before", "<answer>C)</answer>", False),  # \w+ cannot take the parenthesis
    ("med-r1", "think_before", "C", False),
    ("med-r1", "think_after", "<answer>A</answer><think>x</think>", True),
    ("med-r1", "no_think", "C", True),
    ("med-r1", "no_think", "E", False),
    ("med-r1", "no_think", "AB", False),
    ("med-r1", "no_think", " C", False),  # compared unstripped: it could never count as C
    ("med-r1", "no_think", "C.", False),
    ("med-r1", "no_think", "<answer>C</answer>", False),
    ("med-r1", "no_think", SFT_TARGET, False),
    ("med-r1", "zero_shot", "C", True),
    ("med-r1", "zero_shot", "The answer is C", False),
    ("med-r1-qwen2.5", "no_think", SFT_TARGET, True),  # mentions "answer": read through the tag
    ("med-r1-qwen2.5", "no_think", "C", True),
    ("med-r1-qwen2.5", "no_think", "The answer is C", False),  # read through the tag, which is not there
    ("med-r1-qwen2.5", "no_think", "C.", False),
    ("med-r1-qwen2.5", "zero_shot", "<answer>C</answer>", False),  # the zero-shot script compares raw
    ("med-r1-qwen2.5", "think_before", "<answer>D</answer>", True),
]


@pytest.mark.parametrize(("protocol", "mode", "output", "readable"), CASES)
def test_what_each_protocol_can_read(protocol, mode, output, readable):
    rewards = "strict" if protocol == "strict" else "med-r1"
    assert grade_output(output, "C", "ABCD", mode, protocol, rewards).readable is readable


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", ["no_think", "think_before", "think_after", "zero_shot"])
def test_a_correct_output_is_always_readable(protocol, mode):
    """Unreadable outputs are wrong by construction: the share bounds the accuracy at 1 - share."""
    for _, _, output, _ in CASES:
        graded = grade_output(output, "C", "ABCD", mode, protocol, "med-r1")
        assert graded.readable or not graded.correct, output


def _records(count: int) -> list[Record]:
    return [Record(question_id=f"q{index}", dataset="set", modality=MODALITIES[index % 8],
                   question_type=QUESTION_TYPES[index % 5], question="Which?",
                   options={"A": "a", "B": "b", "C": "c", "D": "d"}, answer="C", image=f"{index}.png",
                   image_sha256="0" * 64) for index in range(count)]


def _task(protocol: str) -> TaskSpec:
    return TaskSpec("no_think", "med-r1", "evaluate", "med-r1", protocol)


def test_med_r1s_sft_target_is_unreadable_under_its_no_think_grading_and_flagged():
    records = _records(20)
    summary = summarize([grade(record, SFT_TARGET, _task("med-r1")) for record in records])
    assert summary["unreadable_share"] == 1.0 and summary["mostly_unreadable"] is True
    assert summary["accuracy"] == 0.0  # every answer is C, and right: the format is what fails
    assert summary["letter_confusion"] == {"C": {"none": 20}}  # not the raw output as a column
    for protocol in ("med-r1-qwen2.5", "strict"):  # both read the letter through the tag
        read = summarize([grade(record, SFT_TARGET, _task(protocol)) for record in records])
        assert (read["unreadable_share"], read["mostly_unreadable"], read["accuracy"]) == (0.0, False, 1.0)


@pytest.mark.parametrize(("unreadable", "flagged"), [(9, True), (8, False), (10, True), (0, False)])
def test_the_flag_threshold(unreadable, flagged):
    records = _records(10)
    outputs = [SFT_TARGET] * unreadable + ["C"] * (10 - unreadable)
    summary = summarize([grade(record, output, _task("med-r1")) for record, output in zip(records, outputs)])
    assert summary["unreadable_share"] == unreadable / 10
    assert summary["mostly_unreadable"] is flagged is (unreadable / 10 >= UNREADABLE_FLAG_SHARE)


def _write_report(root, outputs: dict[str, list[str]], protocol: str, mode: str):
    records = _records(40)
    graded = {name: [grade(r, output, TaskSpec(mode, "med-r1", "evaluate", "med-r1", protocol))
                     for r, output in zip(records, texts, strict=True)] for name, texts in outputs.items()}
    summaries = {name: summarize(predictions) for name, predictions in graded.items()}
    evaluation = {"chance_accuracy": 0.25, "split": "data/processed/test.jsonl", "protocol": protocol}
    for name, summary in summaries.items():
        prefix = "" if name == "grpo" else f"{name}_"
        evaluation.update({f"{prefix}{key}": value for key, value in summary.items()})
        if name != "base":
            evaluation[f"{prefix}gain_over_base"] = gain_over_base(summary, summaries["base"])
    evaluation.update(paired_comparisons(graded))  # as the evaluate stage writes them
    (root / "metrics").mkdir()
    (root / "metrics/eval.json").write_text(json.dumps(evaluation))
    write_report(build_report({"eval.json": evaluation}, mode, root / "reports/figures", None), root / "reports")
    return (root / "reports/index.html").read_text()


def _headline(html: str) -> dict[str, list[str]]:
    """The first table's rows by model (base, SFT, GRPO, chance)."""
    first = html[:html.index("</table>")]
    return {row[0].split(" (")[0]: row for row in parse(first).rows if row}


def test_the_report_flags_med_r1s_sft_under_no_think_beside_its_accuracy(tmp_path):
    guesses = ["C", "A", "C", "B"] * 10
    html = _write_report(tmp_path, {"base": guesses, "sft": [SFT_TARGET] * 40, "grpo": guesses}, "med-r1", "no_think")
    assert check_numbers(tmp_path / "reports", tmp_path / "metrics") > 10  # the shares are sourced numbers too
    rows = _headline(html)
    assert rows["SFT"][1:4] == ["0.0", FLAG, "1.0"]  # accuracy, the flag beside it, the unreadable share
    assert rows["GRPO"][1:4] == ["0.5", "", "0.0"] and rows["base"][2] == ""
    text = unescape(html)
    assert "SFT: the med-r1 grading could not read (almost) any of its outputs, so its accuracy measures the " \
           "format, not the answers." in text
    assert "docs/fidelity.md, 'SFT under no-think'" in text
    markdown = (tmp_path / "reports/summary.md").read_text()
    assert FLAG in markdown and "'SFT under no-think'" in markdown


def test_a_flagged_model_elsewhere_is_told_why_without_the_sft_pointer(tmp_path):
    """A think run's base model asked as a trained one but answering bare letters: flagged, with the
    general sentence only (the SFT-under-no-think case is Med-R1's no-think grading)."""
    html = _write_report(tmp_path, {"base": ["C"] * 40, "sft": ["<think>x</think><answer>C</answer>"] * 40,
                                    "grpo": ["<think>x</think><answer>A</answer>"] * 40}, "med-r1", "think_before")
    rows = _headline(html)
    assert rows["base"][2] == FLAG and rows["SFT"][2] == rows["GRPO"][2] == ""
    text = unescape(html)
    assert "base: the med-r1 grading could not read (almost) any of its outputs" in text
    assert "SFT under no-think" not in text


def test_no_flag_column_when_every_model_is_readable(tmp_path):
    html = _write_report(tmp_path, {name: ["C"] * 40 for name in ("base", "sft", "grpo")}, "med-r1", "no_think")
    header = html[html.index("<thead>"):html.index("</thead>")]
    assert "unreadable outputs" in header and "flag" not in header
    assert FLAG not in html and "could not read" not in unescape(html)
