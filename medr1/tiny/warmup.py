"""The base stage's warm-up: give the tiny model what an instruct model has before RL.

It learns, on generic picture questions ("What color is the small mark? A)red, B)blue"),
to see colours, shapes and sizes, to read the options, and to answer in Med-R1's tag
format. It never sees a medical word next to its picture, so on the medical questions it
answers in format but at chance: which picture "CT" or "Grade III" names is left for GRPO.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from medr1.config import WarmupSettings
from medr1.data.records import LETTERS
from medr1.model.encoding import IGNORE_INDEX, ImageCache, encode, prompt_text
from medr1.synthetic.questions import ask
from medr1.synthetic.scenes import FACTORS, Scene, render
from medr1.task.prompts import REASONING_MODES, ReasoningMode, target_completion
from medr1.task.spec import TaskSpec
from medr1.tiny.eyesight import factor_word_ids, train_eyesight
from medr1.tiny.option_reader import is_wired, mask_gradient


def format_loss(model, batch: dict, letter_ids: torch.Tensor, option_letters: list[list[str]]) -> torch.Tensor:
    """Cross-entropy on the tags; at the answer letter, only "some option letter" is taught.

    The letter is the option reader's to choose: teaching which one here would train other
    paths to guess letters over the reader's head, teaching none would leave the model
    closing the tag without an answer.
    """
    labels = batch.pop("labels")
    logits = model(**batch).logits[:, :-1].float()
    targets = labels[:, 1:]
    is_letter = torch.isin(targets, letter_ids)
    plain = targets.masked_fill(is_letter, IGNORE_INDEX)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), plain.reshape(-1),
                                             ignore_index=IGNORE_INDEX)
    rows, columns = is_letter.nonzero(as_tuple=True)
    if len(rows):
        step_logits = logits[rows, columns]
        allowed = torch.zeros_like(step_logits, dtype=torch.bool)
        for k, row in enumerate(rows.tolist()):
            allowed[k, letter_ids[[LETTERS.index(letter) for letter in option_letters[row]]]] = True
        log_total = torch.logsumexp(step_logits, dim=-1)
        log_letters = torch.logsumexp(step_logits.masked_fill(~allowed, float("-inf")), dim=-1)
        loss = loss + (log_total - log_letters).mean()
    return loss


def warm_up(model, processor, settings: WarmupSettings, modes: tuple[ReasoningMode, ...] = REASONING_MODES,
            progress: bool = True) -> list[float]:
    """Supervised steps on generic questions; returns the loss per step.

    Each example follows one of `modes`, drawn at random, with its instruction in the prompt: the
    base then answers in whichever layout train.reasoning asks for, as an instruct model does, so
    switching the reasoning mode retrains GRPO and not the base. The tiny model writes no
    rationale (an empty <think></think>); real models write their own.
    """
    rng = np.random.default_rng(settings.seed)
    cache = ImageCache(processor)
    scenes = []
    for index in range(settings.images):
        scene = Scene.random(rng)
        cache.get(f"generic-{index}", render(scene, rng))
        scenes.append(scene)
    factors = list(FACTORS)
    eyesight_losses, handles = [], []
    wired = is_wired(model)
    letter_ids = torch.tensor([processor.tokenizer.convert_tokens_to_ids(letter) for letter in LETTERS])
    if wired:
        eyesight_losses = train_eyesight(
            model, processor.tokenizer, [cache.get(f"generic-{i}") for i in range(len(scenes))], scenes,
            settings.eyesight_steps, settings.batch_size, settings.eyesight_learning_rate, settings.seed,
            progress=progress,
        )
        # The format phase must not undo what the eyes and the generic words just learned.
        for parameter in model.model.visual.parameters():
            parameter.requires_grad_(False)
        keep = torch.ones_like(model.get_input_embeddings().weight)
        keep[[i for ids in factor_word_ids(processor.tokenizer).values() for i in ids]] = 0.0
        handles.append(mask_gradient(model.get_input_embeddings().weight, keep))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate,
                                  weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=settings.steps, pct_start=0.1
    )
    model.train()
    losses = []
    bar = tqdm(range(settings.steps), desc="warm-up", disable=not progress)
    for _ in bar:
        prompts, images, completions, option_letters = [], [], [], []
        for index in rng.integers(len(scenes), size=settings.batch_size):
            factor = factors[int(rng.integers(len(factors)))]
            mode = modes[int(rng.integers(len(modes)))]
            image = cache.get(f"generic-{index}")
            question = ask(scenes[index], factor, rng, vocabulary="generic")
            prompts.append(prompt_text(processor, question.text, question.options, TaskSpec(mode, "tiny"), image))
            completions.append(target_completion(question.answer, mode))
            option_letters.append(list(question.options))
            images.append(image)
        batch = encode(processor, prompts, images, completions)
        loss = format_loss(model, batch, letter_ids, option_letters) if wired else model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    for handle in handles:
        handle.remove()
    model.eval()
    return eyesight_losses + losses
