"""Greedy decoding that checks drafted tokens in one forward pass: plain greedy output, fewer passes.

A row's draft is a guess at its next tokens. One forward pass feeds each row its newest token
(in the first pass, its prompt's text after the shared head, `medr1.evaluate.heads`) followed by its
draft; the model's argmax at every position says which drafted tokens greedy decoding would
have produced itself. The accepted tokens, plus the model's own token at the first mismatch,
are appended; the rest leaves the KV cache. Every appended token is the argmax
after a prefix of accepted tokens only, so the output is plain greedy decoding's, whatever the
drafts are; a good draft only saves passes.

Evaluation drafts with `FormatDrafts`: the shortest well-formed completions that extend what a
row has written so far. A think-after answer then takes two passes instead of six: the prompt
plus "<answer>" (which gives the letter), then the letter plus the closing tags and end-of-turn.
A model that reasons at length gets no draft for its rationale and decodes one token a pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import accumulate

import torch

from medr1.evaluate.heads import Prompts
from medr1.task.prompts import ReasoningMode, target_completion

Draft = Callable[[int, list[int]], list[int]]  # (row, tokens generated so far) -> guessed next tokens


class FormatDrafts:
    """Drafts for row r: what every shortest well-formed completion extending the row's tokens
    agrees on next (the letter is open until the model writes it; the rationale is guessed empty)."""

    def __init__(self, tokenizer, mode: ReasoningMode, letters: Sequence[str], end_id: int):
        shapes: dict[str, list[list[int]]] = {}
        for options in set(letters):
            shapes[options] = [tokenizer(target_completion(letter, mode), add_special_tokens=False)["input_ids"]
                               + [end_id] for letter in options]
        self._shapes = [shapes[options] for options in letters]

    def for_rows(self, indices: list[int]) -> Draft:
        """The drafts of a batch made of these rows."""
        return lambda row, generated: self(indices[row], generated)

    def __call__(self, row: int, generated: list[int]) -> list[int]:
        done = len(generated)
        rests = [shape[done:] for shape in self._shapes[row] if len(shape) > done and shape[:done] == generated]
        if not rests:
            return []
        common = rests[0]
        for rest in rests[1:]:
            same = next((i for i, (a, b) in enumerate(zip(common, rest)) if a != b), min(len(common), len(rest)))
            common = common[:same]
        return common


@torch.inference_mode()
def greedy_decode(
    model,
    prompts: Prompts,
    draft: Draft,
    end_ids: set[int],
    max_new_tokens: int,
    settled: Callable[[list[list[int]]], list[bool]],
    pad_id: int,
    repetition_penalty: float = 1.0,
) -> list[list[int]]:
    """Each row's greedy tokens (its end token included), for a batch of Qwen2-VL prompts.

    The heads (`prompts.heads`: input_ids, attention_mask, mm_token_type_ids, image_grid_thw and
    either pixel_values or mm_encoder_outputs) run once each; every row then continues its head's
    cache with its own text. A row stops at an end token, at max_new_tokens, or at the first token
    after which its tokens are settled (`settled` answers for many token lists at once): where
    `generate` with that stopping criterion stops it. `repetition_penalty` is applied as
    `generate` applies it. Equal means equal in exact arithmetic: a pass that scores several
    tokens runs other kernels than one-token steps, so in bf16 a near tie may flip.
    """
    heads, owner = prompts.heads, prompts.head_of_row
    rows = owner.shape[0]
    device = prompts.text_ids.device
    head_positions, head_deltas = rope_positions(model, heads["input_ids"], heads["mm_token_type_ids"],
                                                 heads["image_grid_thw"], heads["attention_mask"])
    vision = {name: heads[name] for name in ("pixel_values", "mm_encoder_outputs", "image_grid_thw") if name in heads}
    cache = model(input_ids=heads["input_ids"], attention_mask=heads["attention_mask"], position_ids=head_positions,
                  use_cache=True, logits_to_keep=1, **vision).cache
    cache.batch_select_indices(owner)
    mask, deltas = heads["attention_mask"][owner], head_deltas[owner]
    penalty = RepetitionPenalty(repetition_penalty, prompts, pad_id)
    generated: list[list[int]] = [[] for _ in range(rows)]
    finished = [False] * rows
    drafts = [draft(row, []) for row in range(rows)]
    width = max(len(guess) for guess in drafts)
    fed = torch.cat([prompts.text_ids, _padded(drafts, width, pad_id, device)], dim=1)
    fed_mask = torch.cat([prompts.text_mask, torch.ones(rows, width, dtype=mask.dtype, device=device)], dim=1)
    while True:
        # text positions count up from where the row's valid tokens so far end (padding takes none;
        # a padding token's own position is never used, since it is masked)
        steps = mask.sum(dim=1, keepdim=True) + deltas + fed_mask.cumsum(dim=1) - 1
        mask = torch.cat([mask, fed_mask], dim=1)
        out = model(input_ids=fed, attention_mask=mask, position_ids=steps.unsqueeze(0).expand(3, -1, -1), cache=cache,
                    use_cache=True, logits_to_keep=width + 1)
        scored = fed[:, fed.shape[1] - width - 1 :]
        # (rows, width + 1): the greedy token after each scored position; penalized in float32, as generate does
        predicted = penalty(out.logits.float(), scored).argmax(-1).tolist()
        accepted = min(_accepted(predicted[row], drafts[row]) for row in range(rows) if not finished[row])
        if accepted < width:  # the rejected drafted tokens leave the cache (a negative count removes that many)
            cache.crop(accepted - width)
            mask = mask[:, : mask.shape[1] - (width - accepted)]
        grown = {row: predicted[row][: accepted + 1] for row in range(rows) if not finished[row]}
        for row, tokens in grown.items():
            ends = [count for count, token in enumerate(tokens, start=1)
                    if token in end_ids or len(generated[row]) + count >= max_new_tokens]
            grown[row] = tokens[: ends[0]] if ends else tokens
            finished[row] = bool(ends)
        # Settling is checked on all of a row's new tokens at once; when they settle it, the first
        # settling prefix is searched for (more text never unsettles a verdict).
        rows_settled = [row for row, flag
                        in zip(grown, settled([generated[row] + tokens for row, tokens in grown.items()])) if flag]
        for row in rows_settled:
            tokens = grown[row]
            flags = settled([generated[row] + tokens[:count] for count in range(1, len(tokens))]) + [True]
            grown[row], finished[row] = tokens[: flags.index(True) + 1], True
        for row, tokens in grown.items():
            generated[row] += tokens
            penalty.saw(row, tokens)
        if all(finished):
            return generated
        drafts = [[] if finished[row] else draft(row, generated[row]) for row in range(rows)]
        width = max(len(guess) for guess in drafts)
        newest = [[generated[row][-1]] for row in range(rows)]
        fed = torch.cat([torch.tensor(newest, device=device), _padded(drafts, width, pad_id, device)], dim=1)
        fed_mask = torch.ones(rows, width + 1, dtype=mask.dtype, device=device)


def rope_positions(model, ids: torch.Tensor, kinds: torch.Tensor, grids: torch.Tensor, mask: torch.Tensor):
    """`get_rope_index`'s (positions, deltas) for a left-padded batch, computed for one row per layout.

    Rows whose valid tokens share a layout (where each image starts, and its grid) differ only in
    how much text follows the last image, and text positions count up by one; so a row's positions
    are the first ones of its layout's longest row, and its delta is the same. get_rope_index
    walks each row in Python, which costs as much as a small model's decode step.
    """
    rows = ids.shape[0]
    lengths = mask.sum(dim=1).tolist()
    images = (kinds * mask).diff(dim=1, prepend=torch.zeros_like(kinds[:, :1])).gt(0).sum(dim=1).tolist()
    firsts = [0, *accumulate(images)][:rows]  # each row's first image in `grids`
    layouts: dict[tuple, list[int]] = {}
    for row in range(rows):
        valid = kinds[row, ids.shape[1] - lengths[row] :]
        starts = torch.nonzero(valid.diff(prepend=valid[:1] * 0)).flatten().tolist()
        key = (tuple(starts), tuple(map(tuple, grids[firsts[row] : firsts[row] + images[row]].tolist())))
        layouts.setdefault(key, []).append(row)
    longest = [max(members, key=lambda row: lengths[row]) for members in layouts.values()]
    picked = torch.tensor(longest, device=ids.device)
    grid_rows = torch.cat([grids[firsts[row] : firsts[row] + images[row]] for row in longest]) if any(images) else None
    positions, deltas = model.model.get_rope_index(ids[picked], mm_token_type_ids=kinds[picked],
                                                   image_grid_thw=grid_rows, attention_mask=mask[picked])
    full = torch.zeros(3, rows, ids.shape[1], dtype=positions.dtype, device=ids.device)
    all_deltas = torch.zeros(rows, 1, dtype=deltas.dtype, device=ids.device)
    width = ids.shape[1]
    for index, members in enumerate(layouts.values()):
        source = positions[:, index, width - lengths[longest[index]] :]
        for row in members:
            full[:, row, width - lengths[row] :] = source[:, : lengths[row]]
            all_deltas[row] = deltas[index]
    return full, all_deltas


class RepetitionPenalty:
    """`generate`'s repetition penalty for scored positions: a token already in the row has its
    logit divided by the penalty, or multiplied when negative. Like `generate`, which sees a
    left-padded prompt, the padding token counts for rows shorter than the batch's longest. Position
    j of a pass also counts the drafted tokens fed before it."""

    def __init__(self, penalty: float, prompts: Prompts, pad_id: int):
        self.penalty = penalty
        self.prompts = prompts
        self.pad_id = pad_id
        self.seen = None  # (rows, vocab), made at the first scoring

    def saw(self, row: int, tokens: list[int]) -> None:
        if self.seen is not None:
            self.seen[row, tokens] = True

    def __call__(self, logits: torch.Tensor, fed: torch.Tensor) -> torch.Tensor:
        """`fed` (rows, positions): the pass's inputs; the first is already in the row."""
        if self.penalty == 1.0:
            return logits
        if self.seen is None:
            rows = self.prompts.row_tokens()
            self.seen = torch.zeros(len(rows), logits.shape[-1], dtype=torch.bool, device=logits.device)
            longest = max(len(tokens) for tokens in rows)
            for row, tokens in enumerate(rows):
                self.seen[row, tokens + ([self.pad_id] if len(tokens) < longest else [])] = True
        seen = self.seen.unsqueeze(1).repeat(1, logits.shape[1], 1)
        for position in range(1, logits.shape[1]):
            seen[:, position] = seen[:, position - 1]
            seen[:, position].scatter_(1, fed[:, position : position + 1], True)
        penalized = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
        return torch.where(seen, penalized, logits)


def _accepted(predicted: list[int], guess: list[int]) -> int:
    """How many leading drafted tokens equal the model's own greedy choices."""
    count = 0
    while count < len(guess) and predicted[count] == guess[count]:
        count += 1
    return count


def _padded(drafts: list[list[int]], width: int, pad_id: int, device) -> torch.Tensor:
    return torch.tensor([guess + [pad_id] * (width - len(guess)) for guess in drafts], dtype=torch.long,
                        device=device).view(len(drafts), width)
