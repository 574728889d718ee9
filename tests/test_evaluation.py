"""Fast evaluation equals slow evaluation; the metrics say what they claim."""

import pytest
import torch
from conftest import batch_and_prompts, tiny_architecture

from medr1.data.records import read_jsonl
from medr1.errors import PipelineError
from medr1.evaluate.decoding import generate_completions, length_buckets
from medr1.evaluate.greedy import FormatDrafts, greedy_decode, rope_positions
from medr1.evaluate.metrics import Prediction, bootstrap_interval, grade, letter_confusion, summarize
from medr1.task.rewards import extract_answer_letter, format_score, verdict_settled
from medr1.task.spec import TaskSpec
from medr1.tiny.model import build_model, build_processor, train_tokenizer

NO_THINK = TaskSpec("no_think", "tiny")  # the tiny model's own layout


@pytest.mark.parametrize(("mode", "completion", "settled"), [
    ("no_think", "<answer>A", False),
    ("no_think", "<answer>A</answer>", False),  # well-formed so far: the end-of-turn token ends it
    ("no_think", "<answer>A</answer>  ", False),
    ("no_think", "<answer>A</answer> and more", True),
    ("no_think", "</answer> stray close, then", False),  # no complete tag yet: an answer may still come
    ("think_before", "<think>B</think><answer>A</answer>x", True),
    ("think_before", "<think>the answer is B", False),
    ("think_after", "<answer>A</answer>", False),
    ("think_after", "<answer>A</answer><think>why", False),
    ("think_after", "<answer>A</answer><think>why</think>", False),
    ("think_after", "<answer>A</answer><think>why</think><answer>B</answer>", True),
])
def test_verdict_settled(mode, completion, settled):
    assert verdict_settled(completion, mode) is settled


@pytest.mark.parametrize("mode", ["no_think", "think_before", "think_after"])
@pytest.mark.parametrize("tail", [" junk", "<answer>B</answer>", "</think> more"])
def test_a_settled_prefix_grades_like_any_longer_text(mode, tail):
    """The promise the stopping rule rests on: stopping at a settled prefix changes no grade."""
    heads = {"no_think": "<answer>C</answer>", "think_before": "<think>x</think><answer>C</answer>",
             "think_after": "<answer>C</answer><think>x</think>"}
    prefix = heads[mode] + tail
    assert verdict_settled(prefix, mode)
    for longer in (prefix, prefix + " and so on <answer>D</answer>", prefix + "</think>"):
        assert extract_answer_letter(longer, "ABCD") == extract_answer_letter(prefix, "ABCD") == "C"
        assert format_score(longer, mode) == format_score(prefix, mode) == 0.0


def test_length_buckets_cover_every_index_once_and_group_similar_lengths():
    lengths = [5, 50, 6, 49, 7, 48]
    buckets = length_buckets(lengths, 2)
    assert sorted(i for bucket in buckets for i in bucket) == list(range(6))
    assert [sorted(lengths[i] for i in bucket) for bucket in buckets] == [[49, 50], [7, 48], [5, 6]]


def test_length_buckets_keep_the_questions_about_one_image_together():
    lengths = [5, 50, 6, 49, 7, 48]
    images = ["x", "y", "x", "z", "y", "z"]
    buckets = length_buckets(lengths, 2, together=images)
    assert [[images[i] for i in bucket] for bucket in buckets] == [["y", "y"], ["z", "z"], ["x", "x"]]
    assert buckets[0] == [1, 4]  # placed by its longest question, longest first


def _prediction(answer, predicted, modality="CT"):
    return Prediction("q", "d", modality, "Modality Recognition", answer, predicted, "", True, predicted == answer,
                      predicted is not None)


def test_bootstrap_interval_brackets_the_accuracy_and_narrows_with_more_questions():
    few = [_prediction("A", "A")] * 6 + [_prediction("A", "B")] * 4
    many = few * 20
    low, high = bootstrap_interval(few)
    assert low < 0.6 < high
    low_many, high_many = bootstrap_interval(many)
    assert low_many < 0.6 < high_many and high_many - low_many < high - low
    assert bootstrap_interval([_prediction("A", "A")] * 10) == [1.0, 1.0]


def test_confusion_and_summary_count_every_prediction():
    predictions = [_prediction("A", "A"), _prediction("A", None),
                   _prediction("B", "A", "MRI"), _prediction("B", "B", "MRI")]
    assert letter_confusion(predictions) == {"A": {"A": 1, "none": 1}, "B": {"A": 1, "B": 1}}
    summary = summarize(predictions)
    assert summary["accuracy"] == 0.5 and summary["count"] == 4
    assert summary["per_modality"] == {"CT": 0.5, "MRI": 0.5}
    assert summary["per_modality_question_type"] == {"CT": {"Modality Recognition": 0.5},
                                                     "MRI": {"Modality Recognition": 0.5}}


def test_unknown_modality_is_a_group_of_its_own_and_out_of_the_modality_average():
    predictions = [_prediction("A", "A"), _prediction("A", "B", "MRI"), _prediction("A", "A", "MRI"),
                   _prediction("A", "B", "unknown"), _prediction("A", "B", "unknown")]
    summary = summarize(predictions)
    assert summary["per_modality"] == {"CT": 1.0, "MRI": 0.5, "unknown": 0.0}
    assert summary["modality_average"] == 0.75  # CT and MRI: the paper averages modalities
    assert summary["accuracy"] == 0.4 and summary["count"] == 5  # every question counts


@pytest.fixture(scope="module")
def random_tiny(processed):
    records = list(read_jsonl(processed / "test.jsonl"))
    texts = [r.question + " " + " ".join(r.options.values()) + " <answer>A</answer><think></think>" for r in records]
    tokenizer = train_tokenizer(texts * 5, 512)
    return build_model(tokenizer, tiny_architecture(), seed=3), build_processor(tokenizer, 112), records


def test_bucketed_batches_return_completions_in_record_order(random_tiny, processed):
    model, processor, records = random_tiny
    records = records[:10]
    batched = generate_completions(model, processor, records, processed, NO_THINK, batch_size=4, max_new_tokens=6,
                                   progress=False)
    single = generate_completions(model, processor, records, processed, NO_THINK, batch_size=1, max_new_tokens=6,
                                  progress=False)
    assert batched == single


def test_cached_vision_features_give_the_completions_of_plain_generation(random_tiny, processed):
    """Our decoding (image features computed once per image, passed as encoder outputs) against
    the plain path: pixel values through generate, batch by batch, no stopping criterion."""
    from medr1.evaluate.decoding import plain_completions

    model, processor, records = random_tiny
    records = records[:12]
    ours = generate_completions(model, processor, records, processed, NO_THINK, batch_size=4, max_new_tokens=6,
                                progress=False)
    plain = plain_completions(model, processor, records, processed, NO_THINK, batch_size=4, max_new_tokens=6)
    assert ours == plain


def test_image_files_processed_together_equal_one_by_one(random_tiny, processed):
    """get_files (threads, one processor call per chunk) gives `get`'s tensors, in the asked order,
    repeats included, and processes each file once."""
    import torch

    from medr1.model.encoding import ImageCache

    _, processor, records = random_tiny
    paths = [str(processed / r.image) for r in records[:15]]
    paths = paths + paths[:3]
    together = ImageCache(processor).get_files(paths, chunk=4)
    alone = ImageCache(processor)
    for path, image in zip(paths, together, strict=True):
        assert torch.equal(image.pixel_values, alone.get(path).pixel_values)
        assert torch.equal(image.grid_thw, alone.get(path).grid_thw)
    cache = ImageCache(processor)
    cache.get_files(paths, chunk=4)
    assert len(cache) == len(set(paths)) < len(paths)


def _sharing_images(records, count):
    """`count` records, several about each image, with questions of different lengths."""
    return sorted(records, key=lambda r: r.image)[:count]


def _plain_greedy(model, processor, batch, new_tokens):
    """generate's greedy rows, each cut after its first end-of-turn token."""
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    output = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False, eos_token_id=end,
                            pad_token_id=processor.tokenizer.pad_token_id)
    rows = output[:, batch["input_ids"].shape[1] :].tolist()
    return [row[: row.index(end) + 1] if end in row else row for row in rows]


def _never_settled(token_lists):
    return [False] * len(token_lists)


@pytest.mark.parametrize("guess", ["right", "wrong", "half right", "right in even rows"])
def test_checked_drafts_give_plain_greedy_tokens_and_right_ones_save_passes(random_tiny, processed, guess):
    """Whatever the drafts, the tokens are generate's; drafts of generate's own tokens save passes."""
    model, processor, records = random_tiny
    batch, prompts = batch_and_prompts(processor, _sharing_images(records, 7), processed)
    assert len(prompts.head_keys) < 7  # rows continue shared heads
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    plain = _plain_greedy(model, processor, batch, 12)

    def draft(row, so_far):
        truth = plain[row][len(so_far) : len(so_far) + 4]
        if guess == "wrong" or (guess == "right in even rows" and row % 2):
            return [(token + 1) % 300 for token in truth]
        return truth[:2] + [(token + 1) % 300 for token in truth[2:]] if guess == "half right" else truth

    passes = []
    hook = model.register_forward_hook(lambda *args: passes.append(1))
    try:
        ours = greedy_decode(model, prompts, draft, {end}, 12, _never_settled, processor.tokenizer.pad_token_id)
    finally:
        hook.remove()
    assert ours == plain
    if guess == "right":
        assert len(passes) < max(len(row) for row in plain)


@pytest.fixture
def uneven_images(random_tiny, processed, tmp_path):
    """Records about a few images, copied at several sizes: heads of several lengths, so a batch
    has padding before a head and before a row's text."""
    from PIL import Image

    records = _sharing_images(random_tiny[2], 8)
    for index, name in enumerate(sorted({r.image for r in records})):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        with Image.open(processed / name) as image:
            image.convert("RGB").resize([(112, 112), (56, 56), (56, 112)][index % 3]).save(tmp_path / name)
    return records, tmp_path


def test_heads_of_different_lengths_give_plain_greedy_tokens(random_tiny, uneven_images):
    model, processor, _ = random_tiny
    batch, prompts = batch_and_prompts(processor, *uneven_images)
    assert len(set(prompts.heads["attention_mask"].sum(dim=1).tolist())) > 1
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    plain = _plain_greedy(model, processor, batch, 8)
    ours = greedy_decode(model, prompts, lambda row, so_far: plain[row][len(so_far) : len(so_far) + 2] + [7], {end}, 8,
                         _never_settled, processor.tokenizer.pad_token_id)
    assert ours == plain


def test_a_prompt_without_one_image_is_refused_by_name(random_tiny, processed):
    from medr1.evaluate.heads import split_prompts
    from medr1.model.encoding import ImageCache

    _, processor, records = random_tiny
    image = ImageCache(processor).get(str(processed / records[0].image))
    text, picture = processor.tokenizer("Which organ?")["input_ids"], [processor.image_token_id] * 4
    with pytest.raises(PipelineError, match="has 0 images"):
        split_prompts(processor, [text], [image], ["x"])
    with pytest.raises(PipelineError, match="has 2 images"):
        split_prompts(processor, [picture + text + picture + text], [image], ["x"])
    with pytest.raises(PipelineError, match="ends with its image"):
        split_prompts(processor, [text + picture], [image], ["x"])


def test_shared_heads_score_every_next_token_as_the_whole_prompt_does(random_tiny, uneven_images):
    """Logits, not only tokens: a random tiny model's argmax barely depends on the context, so a
    mask or position error could keep its tokens; its logits still move."""
    model, processor, _ = random_tiny
    batch, prompts = batch_and_prompts(processor, *uneven_images)
    steps = 3
    plain = model.generate(**batch, max_new_tokens=steps, do_sample=False, eos_token_id=None, output_logits=True,
                           return_dict_in_generate=True, pad_token_id=processor.tokenizer.pad_token_id).logits
    scored = []
    hook = model.register_forward_hook(lambda _, args, out: scored.append(out.logits[:, -1]))
    try:
        greedy_decode(model, prompts, lambda row, so_far: [], set(), steps, _never_settled,
                      processor.tokenizer.pad_token_id)
    finally:
        hook.remove()
    assert len(scored) == 1 + steps  # the heads, then one pass a token
    for ours, theirs in zip(scored[1:], plain, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("guess", ["right", "wrong"])
def test_checked_drafts_apply_the_models_repetition_penalty_as_generate_does(random_tiny, processed, guess,
                                                                            monkeypatch):
    model, processor, records = random_tiny
    batch, prompts = batch_and_prompts(processor, _sharing_images(records, 5), processed)
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    unpenalized = _plain_greedy(model, processor, batch, 10)
    # strong enough to move this random model; the module's shared model gets its own value back after the test
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 100.0)
    plain = _plain_greedy(model, processor, batch, 10)

    def draft(row, so_far):
        truth = plain[row][len(so_far) : len(so_far) + 4]
        return truth if guess == "right" else [(token + 1) % 300 for token in truth]

    ours = greedy_decode(model, prompts, draft, {end}, 10, _never_settled, processor.tokenizer.pad_token_id,
                         repetition_penalty=100.0)
    assert plain != unpenalized  # the penalty changes the answers here
    assert ours == plain


def test_generation_settings_that_decoding_does_not_apply_stop_evaluation():
    from transformers import GenerationConfig

    from medr1.errors import PipelineError
    from medr1.evaluate.decoding import greedy_repetition_penalty

    assert greedy_repetition_penalty(GenerationConfig(repetition_penalty=1.05)) == 1.05
    assert greedy_repetition_penalty(GenerationConfig()) == 1.0
    with pytest.raises(PipelineError, match="no_repeat_ngram_size=3"):
        greedy_repetition_penalty(GenerationConfig(no_repeat_ngram_size=3))


def test_a_row_stops_at_its_first_settled_prefix(random_tiny, processed):
    """Right drafts bring several tokens in one pass; a row settled inside them keeps only the
    settling prefix, as generate with a stopping criterion would."""
    model, processor, records = random_tiny
    batch, prompts = batch_and_prompts(processor, records[:4], processed)
    plain = _plain_greedy(model, processor, batch, 8)

    def settled(token_lists):  # like verdict_settled, more tokens never unsettle
        return [len(tokens) >= 3 for tokens in token_lists]

    def draft(row, so_far):
        return plain[row][len(so_far) : len(so_far) + 6]

    ours = greedy_decode(model, prompts, draft, {processor.tokenizer.convert_tokens_to_ids("<|im_end|>")}, 8,
                         settled, processor.tokenizer.pad_token_id)
    assert ours == [row[:3] for row in plain] and min(len(row) for row in plain) > 3


def test_format_drafts_propose_the_rest_of_the_shortest_well_formed_answer(random_tiny):
    _, processor, _ = random_tiny
    tokenizer = processor.tokenizer
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    drafts = FormatDrafts(tokenizer, "think_after", ["ABC", "AB"], end)
    assert drafts(0, []) == ids("<answer>")  # the letter is open until the model writes it
    assert drafts(1, ids("<answer>B")) == ids("</answer><think></think>") + [end]
    assert drafts(0, ids("<answer>B</answer><think>because")) == []  # a rationale: no guess
    assert drafts(1, ids("<answer>C")) == []  # not one of the row's letters
    assert FormatDrafts(tokenizer, "think_before", ["AB"], end)(0, []) == ids("<think></think><answer>")


def test_rope_positions_equal_get_rope_index(random_tiny, processed):
    model, processor, records = random_tiny
    batch, _ = batch_and_prompts(processor, records[:9], processed)
    assert len(set(batch["attention_mask"].sum(dim=1).tolist())) > 1  # rows of several lengths
    args = (batch["input_ids"], batch["mm_token_type_ids"], batch["image_grid_thw"], batch["attention_mask"])
    positions, deltas = rope_positions(model, *args)
    expected, expected_deltas = model.model.get_rope_index(batch["input_ids"],
                                                           mm_token_type_ids=batch["mm_token_type_ids"],
                                                           image_grid_thw=batch["image_grid_thw"],
                                                           attention_mask=batch["attention_mask"])
    valid = batch["attention_mask"].bool()
    assert torch.equal(positions[:, valid], expected[:, valid]) and torch.equal(deltas, expected_deltas)


def test_shared_heads_are_fed_the_positions_of_the_whole_prompt(random_tiny, processed):
    """A head and each row's text after it, then each new token, get get_rope_index's positions
    for the whole prompt (a random model barely notices a shift, so this is checked directly)."""
    model, processor, records = random_tiny
    batch, prompts = batch_and_prompts(processor, _sharing_images(records, 7), processed)
    expected, _ = model.model.get_rope_index(batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
                                             image_grid_thw=batch["image_grid_thw"],
                                             attention_mask=batch["attention_mask"])
    fed = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: fed.append((kwargs["position_ids"],
                                                                                kwargs["attention_mask"])),
                                           with_kwargs=True)
    try:
        greedy_decode(model, prompts, lambda row, so_far: [], set(), 3, _never_settled,
                      processor.tokenizer.pad_token_id)
    finally:
        hook.remove()
    (head_positions, head_mask), (text_positions, _), *steps = fed
    assert len(steps) == 2
    for row, head in enumerate(prompts.head_of_row.tolist()):
        whole = expected[:, row, batch["attention_mask"][row].bool()]
        head_part = head_positions[:, head, head_mask[head].bool()]
        text_part = text_positions[:, row, prompts.text_mask[row].bool()]
        assert torch.equal(torch.cat([head_part, text_part], dim=1), whole)
        later = torch.stack([positions[:, row, 0] for positions, _ in steps], dim=1)
        assert torch.equal(later, whole[:, -1:] + torch.tensor([[1, 2]]))


def test_an_empty_image_cache_passed_in_is_filled_and_shared(random_tiny, processed):
    """An ImageCache with nothing in it yet is falsy; decoding must still fill the caller's cache."""
    from medr1.model.encoding import ImageCache

    model, processor, records = random_tiny
    cache = ImageCache(processor)
    generate_completions(model, processor, records[:5], processed, NO_THINK, batch_size=4, max_new_tokens=2,
                         cache=cache, progress=False)
    assert len(cache) == len({r.image for r in records[:5]}) > 0


def test_the_prompt_rendered_once_around_a_slot_equals_the_full_chat_template(random_tiny, processed):
    from medr1.model.encoding import ImageCache, prompt_text
    from medr1.task.prompts import chat_prompt

    _, processor, records = random_tiny
    record = records[0]
    image = ImageCache(processor).get(str(processed / record.image))
    full = processor.apply_chat_template(chat_prompt(record.question, record.options, "think_after", "tiny"),
                                         tokenize=False, add_generation_prompt=True)
    count = int(image.grid_thw.prod()) // processor.image_processor.merge_size**2
    assert prompt_text(processor, record.question, record.options, TaskSpec("think_after", "tiny"), image) == \
        full.replace(processor.image_token, processor.image_token * count, 1)


def test_grade_uses_the_reward_extractor(processed):
    record = next(iter(read_jsonl(processed / "test.jsonl")))
    graded = grade(record, f"<answer>{record.answer}</answer>", NO_THINK)
    assert graded.correct and graded.well_formed and graded.dataset == record.dataset


def test_a_bounded_image_cache_keeps_its_bound_and_the_completions(random_tiny, processed):
    """evaluate.image_window: the split is decoded in windows of that many images, and the cache
    keeps no more; the completions are those of one window over the whole split."""
    from medr1.evaluate.decoding import image_windows
    from medr1.model.encoding import ImageCache

    model, processor, records = random_tiny
    records = records[:20]
    keys = [r.image for r in records]
    windows = image_windows(keys, 2)
    assert sorted(i for window in windows for i in window) == list(range(len(records)))
    assert all(len({keys[i] for i in window}) <= 2 for window in windows) and len(windows) >= 2
    assert image_windows(keys, None) == [list(range(len(records)))]
    unbounded = generate_completions(model, processor, records, processed, NO_THINK, batch_size=4,
                                     max_new_tokens=6, progress=False)
    bounded = ImageCache(processor, capacity=2)
    windowed = generate_completions(model, processor, records, processed, NO_THINK, batch_size=4,
                                    max_new_tokens=6, cache=bounded, progress=False)
    assert windowed == unbounded and len(bounded) == 2
    images = [str(processed / key) for key in dict.fromkeys(keys)]
    assert len(bounded.get_files(images)) == len(images) and len(bounded) == 2  # one call over the bound too
