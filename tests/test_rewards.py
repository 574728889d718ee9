import pytest

from medr1.task.rewards import accuracy_score, extract_answer_letter, format_score, reward_functions


@pytest.mark.parametrize(
    "completion, letter",
    [
        ("<answer>C</answer>", "C"),
        ("<answer> c </answer>", "C"),
        ("<answer>C)</answer>", "C"),
        ("<answer>C) CT</answer>", "C"),
        ("<answer>(B)</answer>", "B"),
        ("<answer>D. Fundus</answer>", "D"),
        ("<answer>A</answer><answer>B</answer>", "A"),  # the first tag counts
        ("<answer>B", None),  # unclosed
        ("B", None),
        ("<answer>CT</answer>", None),  # option text alone is not a letter
        ("<answer></answer>", None),
        ("<think>maybe A</think><answer>D</answer>", "D"),  # reasoning naming another letter
        ("<answer>A</answer><think>B looks likelier</think>", "A"),  # think-after: the answer tag, not the rationale
        ("<think>unclosed <answer>C</answer>", "C"),  # extraction is lenient; the format reward is not
    ],
)
def test_extract_answer_letter(completion, letter):
    assert extract_answer_letter(completion) == letter


def test_letter_outside_the_options_is_no_answer():
    assert extract_answer_letter("<answer>D</answer>", valid_letters="ABC") is None
    assert accuracy_score("<answer>D</answer>", "D", valid_letters="ABC") == 0.0


@pytest.mark.parametrize(
    "mode, good, bad",
    [
        ("no_think", "<answer>A</answer>",
         ["<think>x</think><answer>A</answer>", "<answer>A</answer><answer>B</answer>", "A"]),
        ("think_before", "<think>dark disc</think><answer>B</answer>",
         ["<answer>B</answer><think>x</think>", "<answer>B</answer>", "<think>x<answer>B</answer>",
          "<think>x</think><answer>B</answer><answer>C</answer>"]),
        ("think_after", "<answer>B</answer><think>dark disc</think>",
         ["<think>x</think><answer>B</answer>", "<answer>B</answer>", "<answer>B</answer><think>x",
          "<answer>B</answer><think>x</think><answer>C</answer>", "<answer>B<think>x</think></answer>"]),
    ],
)
def test_format_score_per_mode(mode, good, bad):
    assert format_score(good, mode) == 1.0
    for completion in bad:
        assert format_score(completion, mode) == 0.0, completion


def test_trl_signature_with_conversational_completions():
    completions = [[{"role": "assistant", "content": "<answer>B</answer>"}],
                   [{"role": "assistant", "content": "<answer>A"}]]
    format_reward, accuracy_reward = reward_functions(["format", "accuracy"], "strict", "no_think")
    assert accuracy_reward(completions, answer=["B", "A"], letters=["AB", "AB"]) == [1.0, 0.0]
    assert format_reward(completions) == [1.0, 0.0]
    assert [f.__name__ for f in reward_functions(["accuracy", "format"], "med-r1", "no_think")] == \
        ["accuracy_reward", "format_reward"]  # TRL logs rewards/<name>/mean in the order given
    with pytest.raises(ValueError, match="unknown reward"):
        reward_functions(["fromat"], "strict", "no_think")
