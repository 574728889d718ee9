"""The embedded default: a synthetic medical VQA set written in the real OmniMedVQA layout.

One dataset per modality, like OmniMedVQA's per-source datasets; every image is asked all
five question types, and every answer can be read off its image (see `medr1.synthetic.scenes`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medr1.data.sources.omnimedvqa import QA_FOLDER
from medr1.synthetic.questions import ask
from medr1.synthetic.scenes import FACTORS, Scene, render

# OmniMedVQA's verbatim modality_type strings, typos included, so the reader's mapping is exercised.
RAW_MODALITY = {
    "CT": "CT(Computed Tomography)",
    "MRI": "MR (Mag-netic Resonance Imaging)",
    "X-Ray": "X-Ray",
    "Ultrasound": "ultrasound",
    "Dermoscopy": "Dermoscopy",
    "Fundus": "Fundus Photography",
    "OCT": "OCT (Optical Coherence Tomography",
    "Microscopy": "Microscopy Images",
}


def dataset_name(modality: str) -> str:
    return f"Synthetic {modality} (Med-R1 default)"


def write_synthetic(root: Path, images_per_modality: int, seed: int, progress: bool = True) -> int:
    """Write the set under `root`; returns the number of questions written."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / QA_FOLDER).mkdir(parents=True, exist_ok=True)
    modalities = FACTORS["background"][0]
    total = 0
    for background, modality in enumerate(tqdm(modalities, desc="synthesize", disable=not progress)):
        dataset = dataset_name(modality)
        image_folder = root / "Images" / dataset
        image_folder.mkdir(parents=True, exist_ok=True)
        entries = []
        for index in range(images_per_modality):
            scene = Scene.random(rng, background=background)
            relative = f"Images/{dataset}/{modality.lower()} case ({index:04d}).png"
            render(scene, rng).save(root / relative)
            for factor in FACTORS:
                question = ask(scene, factor, rng, vocabulary="medical")
                entry = {
                    "dataset": dataset,
                    "question_id": f"{dataset}_{index:04d}_{factor}",
                    "question_type": question.question_type,
                    "question": question.text,
                    "gt_answer": question.options[question.answer],
                    "image_path": relative,
                    "modality_type": RAW_MODALITY[modality],
                }
                entry.update({f"option_{letter}": text for letter, text in question.options.items()})
                entries.append(entry)
        (root / QA_FOLDER / f"{dataset}.json").write_text(json.dumps(entries, indent=1), encoding="utf-8")
        total += len(entries)
    return total
