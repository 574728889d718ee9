"""The base stage's warm-up: give the tiny model what an instruct model has before RL.

It learns, on generic picture questions ("What color is the small mark? A)red, B)blue"),
to see colours, shapes and sizes, to read the options, and to answer in Med-R1's tag
format. It never sees a medical word next to its picture, so on the medical questions it
answers in format but at chance: which picture "CT" or "Grade III" names is left for GRPO.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel
from tqdm import tqdm

from medr1.encoding import ImageCache, encode, prompt_text
from medr1.prompts import ReasoningMode, target_completion
from medr1.questions import ask, ask_to_name, ask_to_read
from medr1.scenes import FACTORS, Scene, render


class WarmupSettings(BaseModel):
    images: int = 600
    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0
    # share of steps' examples that are naming and reading questions (the rest: full multiple choice)
    naming_share: float = 0.2
    reading_share: float = 0.1


def warm_up(model, processor, settings: WarmupSettings, mode: ReasoningMode = "no_think", progress: bool = True) -> list[float]:
    """Supervised steps on generic questions; returns the loss per step."""
    rng = np.random.default_rng(settings.seed)
    cache = ImageCache(processor)
    scenes = []
    for index in range(settings.images):
        scene = Scene.random(rng)
        cache.get(f"generic-{index}", render(scene, rng))
        scenes.append(scene)
    factors = list(FACTORS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=settings.steps, pct_start=0.1
    )
    model.train()
    losses = []
    bar = tqdm(range(settings.steps), desc="warm-up", disable=not progress)
    for _ in bar:
        prompts, images, completions = [], [], []
        for index in rng.integers(len(scenes), size=settings.batch_size):
            factor = factors[int(rng.integers(len(factors)))]
            image = cache.get(f"generic-{index}")
            draw = rng.random()
            if draw < settings.naming_share:
                text, word = ask_to_name(scenes[index], factor, rng)
                prompts.append(prompt_text(processor, text, {}, mode, image))
                completions.append(target_completion(" " + word, mode))  # ' gray' is the token the options use
            else:
                if draw < settings.naming_share + settings.reading_share:
                    question = ask_to_read(factor, rng)
                else:
                    question = ask(scenes[index], factor, rng, vocabulary="generic")
                prompts.append(prompt_text(processor, question.text, question.options, mode, image))
                completions.append(target_completion(question.answer, mode))
            images.append(image)
        loss = model(**encode(processor, prompts, images, completions)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    return losses
