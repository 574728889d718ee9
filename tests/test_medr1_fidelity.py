"""Our `med-r1` variants against Med-R1's own functions (tests/medr1_reference.py, transcribed
from its repository): rewards in both modes, the three evaluation scripts' grading, and the
prompt text, on tricky completions and on real records of Med-R1's split files."""

import json
import os
from pathlib import Path

import medr1_reference as reference
import pytest

from medr1.data.sources.medr1_splits import parse_problem
from medr1.task import published
from medr1.task.grading import gold_of, grade_output, score
from medr1.task.prompts import user_prompt
from medr1.task.rewards import reward_functions

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_SPLITS = Path(os.environ.get("MEDR1_SHARED_SPLITS", Path(__file__).resolve().parents[2] /
                                    "shared/datasets/medr1-splits"))

# Completions a policy emits, or could learn to emit, that the two implementations could read
# differently: spacing, case, repeated and nested tags, untagged letters, lines, maths.
TRICKY = [
    "<think>The image is a CT.</think><answer>C</answer>",
    "<think>The image is a CT.</think>\n<answer>C</answer>",
    "<think>x</think> <answer> C </answer>",
    "<think>x</think><answer>C</answer>\n",
    " <think>x</think><answer>C</answer>",
    "<think></think><answer></answer>",
    "<think>x</think><answer>c</answer>",
    "<think>x</think><answer>(C)</answer>",
    "<think>x</think><answer>C)</answer>",
    "<think>x</think><answer>C. CT</answer>",
    "<think>x</think><answer>CT</answer>",
    "<think>x</think><answer>C\n</answer>",
    "<think>x</think><answer>\nC\n</answer>",
    "<think>a\nb\nc</think><answer>C</answer>",
    "<think>x</think><answer>A</answer><answer>C</answer>",
    "<think>x</think><answer>C</answer><answer>A</answer>",
    "<think>x</think><answer>A</answer> C </answer>",
    "<think>x</think><answer>C</answer> and more text",
    "<think>x</think><answer>C</answer></answer>",
    "<think><think>x</think></think><answer>C</answer>",
    "<think>x</think><think>y</think><answer>C</answer>",
    "<think>x<answer>A</answer></think><answer>C</answer>",
    "<think>x</think>",
    "<think>x</think><answer>C",
    "<think>x<answer>C</answer>",
    "<answer>C</answer>",
    " <answer>C</answer>",
    "\n\n<answer>C</answer>",
    "<answer>C</answer> ",
    "<answer> C </answer>",
    "<answer>C</answer><think>because</think>",
    "<answer>C</answer>\n<think>because</think>",
    "<answer>C</answer><think>because",
    "<answer>C</answer></answer>",
    "<answer>A</answer>C</answer>",
    "<answer><answer>C</answer></answer>",
    "<answer>\nC</answer>",
    "<answer>C\nD</answer>",
    "<answer>",
    "</answer>",
    "C",
    "C ",
    " C",
    "c",
    "(C)",
    "C)",
    "C.",
    "The answer is C.",
    "Answer: C",
    "answer C",
    "CT",
    "A",
    "",
    "$C$",
    "\\boxed{C}",
    "The answer is $\\boxed{C}$",
    "<answer>$C$</answer>",
    "<answer>2</answer>",
    "2",
    "<think>2+2=4</think><answer>4</answer>",
    "<think>x</think><answer>C</answer><|im_end|>",
    "<think>x</think><answer>C</answer>\u200b",
    "<think>x</think>\u3000<answer>C</answer>",
    "<THINK>x</THINK><ANSWER>C</ANSWER>",
    "<think>x</think><answer>Ｃ</answer>",
    "<think>x</think><answer>C_1</answer>",
]
SOLUTIONS = ["<answer> C </answer>", "<answer> A </answer>", "<answer> 4 </answer>", "<answer> 2 </answer>"]
CASES = [(completion, solution) for completion in TRICKY for solution in SOLUTIONS]


def _trl(completion: str) -> list[dict]:
    return [{"role": "assistant", "content": completion}]


def test_the_corpus_is_large_enough_to_mean_something():
    assert len(set(TRICKY)) == len(TRICKY) >= 60


@pytest.mark.parametrize("mode, reference_format", [("think_before", reference.format_reward_think),
                                                     ("no_think", reference.format_reward_nothink)])
def test_format_reward_equals_med_r1s_in_both_modes(mode, reference_format):
    expected = reference_format([_trl(completion) for completion in TRICKY])
    assert [published.format_reward(completion, mode) for completion in TRICKY] == expected
    assert reward_functions(["format"], "med-r1", mode)[0]([_trl(c) for c in TRICKY]) == expected
    assert 0 < sum(expected) < len(TRICKY)  # the corpus has both verdicts


def test_accuracy_reward_equals_med_r1s_math_verify_pass_included():
    completions, solutions = zip(*CASES)
    expected = reference.accuracy_reward([_trl(c) for c in completions], list(solutions))
    assert [published.accuracy_reward(c, s) for c, s in CASES] == expected
    gold = [gold_of(s) for s in solutions]
    ours = reward_functions(["accuracy"], "med-r1", "think_before")[0]([_trl(c) for c in completions], answer=gold)
    assert ours == expected
    assert 0 < sum(expected) < len(CASES)
    # the math_verify pass decides some cases that string matching would not
    assert expected[CASES.index(("<think>2+2=4</think><answer>4</answer>", "<answer> 4 </answer>"))] == 1.0


@pytest.mark.parametrize("protocol, mode, reference_correct", [
    ("med-r1", "think_before", reference.correct_qwen2vl_think),
    ("med-r1", "no_think", reference.correct_qwen2vl_raw),
    ("med-r1", "zero_shot", reference.correct_qwen2vl_raw),
    ("med-r1-qwen2.5", "think_before", reference.correct_qwen2vl_think),
    ("med-r1-qwen2.5", "no_think", reference.correct_qwen2_5vl_nothink),
])
def test_grading_equals_each_evaluation_script(protocol, mode, reference_correct):
    expected = [reference_correct(completion, solution) for completion, solution in CASES]
    ours = [grade_output(c, gold_of(s), "ABCD", mode, protocol, "med-r1").correct for c, s in CASES]
    assert ours == expected
    assert [score(c, s, mode, "med-r1", protocol)["correct"] for c, s in CASES] == expected
    assert 0 < sum(expected) < len(CASES)


def _real_records() -> list[dict]:
    return json.loads((FIXTURES / "medr1_split_records.json").read_text())


@pytest.mark.parametrize("purpose, mode, template", [
    ("train", "think_before", reference.TRAIN_THINK), ("train", "no_think", reference.TRAIN_NOTHINK),
    ("evaluate", "think_before", reference.EVAL_THINK), ("evaluate", "no_think", reference.EVAL_NOTHINK),
    ("zero_shot", "think_before", reference.EVAL_ZERO_SHOT), ("zero_shot", "no_think", reference.EVAL_ZERO_SHOT),
])
def test_prompt_text_is_med_r1s_template_filled_with_a_real_record_byte_for_byte(purpose, mode, template):
    records = _real_records()
    assert len(records) >= 50 and len({r["file"] for r in records}) == 13  # every test file of both families
    for record in records:
        question, options = parse_problem(record["problem"])
        ours = user_prompt(question, options, mode, style="med-r1", purpose=purpose)
        assert ours.encode() == template.format(Question=record["problem"]).encode(), record


@pytest.mark.skipif(not SHARED_SPLITS.is_dir(), reason=f"Med-R1's split files not at {SHARED_SPLITS}")
def test_every_problem_of_med_r1s_split_files_is_rebuilt_byte_for_byte():
    from medr1.task.prompts import medr1_problem

    checked, unparsed = 0, []
    for file in sorted(SHARED_SPLITS.glob("*/*/*.json")):
        for entry in json.loads(file.read_text()):
            parsed = parse_problem(entry["problem"])
            if parsed is None:
                unparsed.append(entry["problem"])
                continue
            assert medr1_problem(*parsed) == entry["problem"], (file.name, entry["problem"])
            checked += 1
    assert checked > 100_000 and unparsed == []


def test_medr1_score_explains_each_completion_and_names_a_bad_line():
    import subprocess
    import sys

    lines = [{"completion": "<answer>A</answer> C </answer>", "solution": "<answer> C </answer>"},
             {"completion": "C", "solution": "<answer> C </answer>"}]
    command = [sys.executable, "-m", "medr1.cli", "score", "--rewards", "med-r1", "--reasoning", "no_think",
               "--protocol", "med-r1"]
    result = subprocess.run(command, input="\n".join(json.dumps(line) for line in lines), capture_output=True,
                            text=True, check=True)
    scored = [json.loads(line) for line in result.stdout.splitlines()]
    assert scored[0] == {"format_reward": 1.0, "accuracy_reward": 0.0,  # the repeated tag earns the format reward
                         "extracted": "<answer>A</answer> C </answer>", "correct": False}
    assert scored[1] == {"format_reward": 0.0, "accuracy_reward": 1.0, "extracted": "C", "correct": True}
    strict = subprocess.run([*command[:5], "strict", *command[6:]], input=json.dumps(lines[0]),
                            capture_output=True, text=True, check=True)
    assert json.loads(strict.stdout)["format_reward"] == 0.0
    bad = subprocess.run(command, input=json.dumps(lines[1]) + '\n{"completion": 3}\n', capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 1 and "stdin line 2" in bad.stdout and "Traceback" not in bad.stdout + bad.stderr
