"""Multiple-choice questions about a scene, in the medical or the generic vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medr1.data.records import LETTERS
from medr1.synthetic.scenes import FACTORS, Scene

QUESTION_TYPE_OF_FACTOR = {
    "background": "Modality Recognition",
    "organ": "Anatomy Identification",
    "lesion_shape": "Disease Diagnosis",
    "lesion_size": "Lesion Grading",
    "lesion_color": "Other Biological Attributes",
}

MEDICAL_QUESTIONS = {
    "background": (
        "What imaging modality was used to acquire this image?",
        "Which imaging technique produced this picture?",
        "What kind of medical image is this?",
    ),
    "organ": (
        "Which organ is shown in this image?",
        "What anatomical structure is visible here?",
        "Which part of the body does this image show?",
    ),
    "lesion_shape": (
        "What is the most likely diagnosis?",
        "Which abnormality is present in this image?",
        "What disease does this image suggest?",
    ),
    "lesion_size": (
        "What is the grade of the lesion?",
        "How would you grade the severity of this lesion?",
        "Which grade best describes the lesion?",
    ),
    "lesion_color": (
        "What is the pigmentation of the lesion?",
        "How would you describe the color of the abnormal region?",
        "Which term describes the lesion's appearance?",
    ),
}

GENERIC_QUESTIONS = {
    "background": ("What color is the background?", "Which color fills the background?"),
    "organ": ("What is the big shape?", "Which outline does the large shape have?"),
    "lesion_shape": ("What is the shape of the small mark?", "Which mark is drawn inside?"),
    "lesion_size": ("How big is the small mark?", "What size is the inner mark?"),
    "lesion_color": ("What color is the small mark?", "Which color does the inner mark have?"),
}


@dataclass(frozen=True)
class Question:
    factor: str
    question_type: str
    text: str
    options: dict[str, str]
    answer: str


def option_count(rng: np.random.Generator, available: int) -> int:
    """Mostly 4 options, sometimes 3 or 2, as in OmniMedVQA."""
    count = int(rng.choice([4, 3, 2], p=[0.7, 0.2, 0.1]))
    return min(count, available)


def ask(scene: Scene, factor: str, rng: np.random.Generator, vocabulary: str = "medical") -> Question:
    """A question about one factor of the scene, options shuffled, distractors drawn from the same factor."""
    medical, generic = FACTORS[factor]
    words = medical if vocabulary == "medical" else generic
    correct = getattr(scene, factor)
    others = [index for index in range(len(words)) if index != correct]
    count = option_count(rng, len(words))
    chosen = [correct, *rng.choice(others, size=count - 1, replace=False).tolist()]
    rng.shuffle(chosen)
    options = {LETTERS[i]: words[index] for i, index in enumerate(chosen)}
    answer = LETTERS[chosen.index(correct)]
    templates = MEDICAL_QUESTIONS[factor] if vocabulary == "medical" else GENERIC_QUESTIONS[factor]
    text = templates[int(rng.integers(len(templates)))]
    return Question(factor, QUESTION_TYPE_OF_FACTOR[factor], text, options, answer)

