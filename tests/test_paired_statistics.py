"""medr1/evaluate/paired.py against independent computations: scipy's exact binomial test for McNemar, a
seeded paired bootstrap written here, and scipy's own paired bootstrap; with the edge cases."""

import numpy as np
import pytest
from scipy.stats import binomtest, bootstrap

from medr1.errors import PipelineError
from medr1.evaluate import paired
from medr1.evaluate.paired import compare_predictions, mcnemar_exact, paired_difference


def _answers(size: int, seed: int, rates=(0.62, 0.55)):
    generator = np.random.default_rng(seed)
    return [list(generator.random(size) < rate) for rate in rates]


@pytest.mark.parametrize(("only_a", "only_b"), [(0, 0), (0, 1), (1, 0), (3, 10), (10, 3), (7, 7), (0, 25), (40, 61),
                                                (250, 300), (1200, 1100)])
def test_mcnemar_is_scipys_exact_binomial_test(only_a, only_b):
    expected = 1.0 if only_a + only_b == 0 else binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def _independent_interval(a, b, resamples: int, level: float, seed: int) -> tuple[float, float]:
    """The paired percentile bootstrap as a textbook writes it: draw question indices, average the differences."""
    differences = np.array(a, dtype=float) - np.array(b, dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[draws].mean(axis=1)
    return tuple(round(float(q), 4) for q in np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2]))


@pytest.mark.parametrize(("size", "seed"), [(37, 0), (400, 1), (2500, 2)])
def test_bootstrap_interval_equals_a_seeded_paired_bootstrap_and_agrees_with_scipys(size, seed, monkeypatch):
    a, b = _answers(size, seed)
    result = paired_difference(a, b, resamples=2000, level=0.95, seed=seed)
    assert result.interval == _independent_interval(a, b, 2000, 0.95, seed)
    monkeypatch.setattr(paired, "CHUNK_VALUES", size * 7)  # drawn in many chunks: the same stream, the same interval
    assert paired_difference(a, b, resamples=2000, level=0.95, seed=seed).interval == result.interval
    # scipy draws its own resamples: agreement within the bootstrap's Monte Carlo error
    scipys = bootstrap((np.array(a, float), np.array(b, float)), lambda x, y: np.mean(x - y), paired=True,
                       vectorized=False, n_resamples=4000, method="percentile", confidence_level=0.95,
                       random_state=np.random.default_rng(99)).confidence_interval
    tolerance = 3 / size ** 0.5 * 0.2
    assert result.interval[0] == pytest.approx(scipys.low, abs=tolerance)
    assert result.interval[1] == pytest.approx(scipys.high, abs=tolerance)
    assert result.difference == round(np.mean(a) - np.mean(b), 4)
    assert (result.only_a, result.only_b) == (sum(x and not y for x, y in zip(a, b)),
                                              sum(y and not x for x, y in zip(a, b)))
    assert result.mcnemar_p == pytest.approx(binomtest(min(result.only_a, result.only_b),
                                                       result.only_a + result.only_b, 0.5).pvalue, rel=1e-9)


def test_all_agree():
    for answers in ([True] * 50, [False] * 50, [True, False] * 25):
        result = paired_difference(answers, list(answers))
        assert (result.difference, result.interval, result.only_a, result.only_b, result.mcnemar_p) == (
            0.0, (0.0, 0.0), 0, 0, 1.0)
        assert result.verdict() == "undecided"


def test_all_disagree():
    result = paired_difference([True] * 30, [False] * 30)
    assert (result.difference, result.interval, result.only_a, result.only_b) == (1.0, (1.0, 1.0), 30, 0)
    assert result.mcnemar_p == pytest.approx(binomtest(0, 30, 0.5).pvalue) == pytest.approx(2 * 0.5**30)
    assert result.verdict() == "a better"
    flipped = paired_difference([False] * 30, [True] * 30)
    assert flipped.interval == (-1.0, -1.0) and flipped.verdict() == "b better"
    split = paired_difference([True, False] * 20, [False, True] * 20)  # disagree everywhere, 20 each way
    assert split.difference == 0.0 and split.mcnemar_p == 1.0 and split.interval[0] < 0 < split.interval[1]


def _prediction(question: str, modality: str, question_type: str, correct: bool) -> dict:
    return {"question_id": question, "modality": modality, "question_type": question_type, "correct": correct}


def test_compare_predictions_pairs_by_question_and_slices():
    a = [_prediction(f"q{i}", "CT" if i < 40 else "MRI", "Disease Diagnosis", i % 3 != 0) for i in range(100)]
    b = [_prediction(f"q{i}", "CT" if i < 40 else "MRI", "Disease Diagnosis", i % 2 == 0) for i in range(100)][::-1]
    result = compare_predictions(a, b, resamples=500, seed=3)
    order = sorted(f"q{i}" for i in range(100))
    by_id_a, by_id_b = {p["question_id"]: p for p in a}, {p["question_id"]: p for p in b}
    expected = paired_difference([by_id_a[q]["correct"] for q in order], [by_id_b[q]["correct"] for q in order],
                                 500, 0.95, 3)
    assert result["overall"] == expected.as_dict()
    ct = [q for q in order if by_id_a[q]["modality"] == "CT"]
    on_ct = paired_difference([by_id_a[q]["correct"] for q in ct], [by_id_b[q]["correct"] for q in ct], 500, 0.95, 3)
    assert result["per_modality"]["CT"] == on_ct.as_dict()
    assert result["per_modality"]["MRI"]["n"] == 60 and result["per_question_type"]["Disease Diagnosis"]["n"] == 100


def test_compare_predictions_refuses_different_questions_or_repeats():
    a = [_prediction("q1", "CT", "Disease Diagnosis", True), _prediction("q2", "CT", "Disease Diagnosis", True)]
    with pytest.raises(PipelineError, match=r"not for the same questions: 1 only in the first \(e.g. \['q2'\]\)"):
        compare_predictions(a, a[:1])
    with pytest.raises(PipelineError, match="hold question q1 twice"):
        compare_predictions(a, [a[0], a[0]])
