"""Two models compared on the same questions: the accuracy difference, its paired bootstrap interval,
and McNemar's exact test; overall and per modality and question type.

Paired means question by question: each resample draws questions (with replacement) and takes both
models' answers to the drawn questions together, so the interval reflects how often the two models
disagree, not each model's own spread. Far narrower than two separate intervals when the models agree
on most questions, which is what lets a retrain be told from the model it would replace.

The one implementation of these statistics: the promotion gates (medr1/registry/comparison.py), the
evaluation metrics and the report all call it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from math import comb

import numpy as np

from medr1.errors import PipelineError

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
SLICES = ("modality", "question_type")  # the Prediction fields a comparison is broken down by
CHUNK_VALUES = 1 << 22  # resampled answers held in memory at once (32 MiB of indices)


@dataclass(frozen=True)
class PairedDifference:
    """Model a against model b on `n` shared questions: accuracy_a - accuracy_b = difference."""

    n: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    interval: tuple[float, float]  # paired percentile bootstrap of the difference
    only_a: int  # questions a answers right and b wrong
    only_b: int  # ... and the other way round
    mcnemar_p: float  # exact two-sided McNemar test (binomial on the only_a + only_b discordant questions)

    def as_dict(self) -> dict:
        return {**asdict(self), "interval": list(self.interval)}

    def verdict(self) -> str:
        """'a better' / 'b better' when the interval excludes 0, else 'undecided'."""
        low, high = self.interval
        return "a better" if low > 0 else "b better" if high < 0 else "undecided"


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: P(a split of the discordant questions at least this uneven | no
    difference), the binomial(only_a + only_b, 1/2) tails; 1.0 when no question is discordant."""
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(comb(discordant, k) for k in range(min(only_a, only_b) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**discordant)))


def bootstrap_mean_interval(values: Sequence[float], resamples: int = RESAMPLES, level: float = LEVEL,
                            seed: int = SEED) -> tuple[float, float]:
    """Percentile interval of mean(values) over `resamples` draws of the values with replacement
    (numpy's default_rng(seed), indices drawn resample by resample). A value is one question's paired
    difference: a question drawn brings every answer it holds along."""
    values = np.asarray(values)
    size = len(values)
    if size == 0:
        return (0.0, 0.0)
    generator = np.random.default_rng(seed)
    means = np.empty(resamples)
    rows = max(1, CHUNK_VALUES // size)
    for start in range(0, resamples, rows):  # the same stream of draws as one (resamples, size) call
        count = min(rows, resamples - start)
        means[start:start + count] = values[generator.integers(0, size, (count, size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return (round(float(low), 4), round(float(high), 4))


def paired_bootstrap_interval(a: Sequence[bool], b: Sequence[bool], resamples: int = RESAMPLES,
                              level: float = LEVEL, seed: int = SEED) -> tuple[float, float]:
    """Percentile interval of mean(a_i - b_i) over `resamples` draws of the questions with replacement."""
    differences = np.asarray(a, dtype=np.int8) - np.asarray(b, dtype=np.int8)
    return bootstrap_mean_interval(differences, resamples, level, seed)


def paired_difference(a: Sequence[bool], b: Sequence[bool], resamples: int = RESAMPLES, level: float = LEVEL,
                      seed: int = SEED) -> PairedDifference:
    """a's correctness against b's on the same questions, in the same order."""
    if len(a) != len(b):
        raise ValueError(f"paired answers need the same questions: {len(a)} against {len(b)}")
    n = len(a)
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    accuracy_a = sum(map(bool, a)) / n if n else 0.0
    accuracy_b = sum(map(bool, b)) / n if n else 0.0
    return PairedDifference(n=n, accuracy_a=round(accuracy_a, 4), accuracy_b=round(accuracy_b, 4),
                            difference=round(accuracy_a - accuracy_b, 4),
                            interval=paired_bootstrap_interval(a, b, resamples, level, seed),
                            only_a=only_a, only_b=only_b, mcnemar_p=mcnemar_exact(only_a, only_b))


def _by_question(predictions: Iterable, side: str) -> dict[str, dict]:
    """{question_id: {correct, modality, question_type}} from Prediction objects or their dicts."""
    rows = {}
    for prediction in predictions:
        row = prediction if isinstance(prediction, dict) else prediction.__dict__
        if row["question_id"] in rows:
            raise PipelineError(f"the {side} predictions hold question {row['question_id']} twice")
        rows[row["question_id"]] = {"correct": bool(row["correct"]), **{key: row.get(key) for key in SLICES}}
    return rows


def compare_predictions(a: Iterable, b: Iterable, resamples: int = RESAMPLES, level: float = LEVEL,
                        seed: int = SEED, slices: Sequence[str] = SLICES) -> dict:
    """a against b on the same questions (matched by question_id; both must hold exactly the same ones):
    {"overall": ..., "per_modality": {group: ...}, "per_question_type": {group: ...}}, each a
    PairedDifference as a dict. A slice's resamples are seeded alike, so a slice is reproducible alone."""
    a_rows, b_rows = _by_question(a, "first"), _by_question(b, "second")
    if a_rows.keys() != b_rows.keys():
        only_a, only_b = sorted(a_rows.keys() - b_rows.keys()), sorted(b_rows.keys() - a_rows.keys())
        raise PipelineError(f"the two prediction sets are not for the same questions: {len(only_a)} only in the "
                            f"first (e.g. {only_a[:3]}), {len(only_b)} only in the second (e.g. {only_b[:3]})")
    order = sorted(a_rows)

    def compare(ids: list[str]) -> dict:
        return paired_difference([a_rows[i]["correct"] for i in ids], [b_rows[i]["correct"] for i in ids],
                                 resamples, level, seed).as_dict()

    result = {"overall": compare(order)}
    for key in slices:
        groups: dict[str, list[str]] = {}
        for question in order:
            groups.setdefault(str(a_rows[question][key]), []).append(question)
        result[f"per_{key}"] = {group: compare(ids) for group, ids in sorted(groups.items())}
    return result
