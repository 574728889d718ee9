"""Fast evaluation equals slow evaluation; the metrics say what they claim."""

import pytest
import torch

from medr1.decoding import VerdictSettled, generate_completions, length_buckets
from medr1.metrics import Prediction, bootstrap_interval, grade, letter_confusion, summarize
from medr1.records import read_jsonl
from medr1.rewards import extract_answer_letter, format_score, verdict_settled
from medr1.tiny_model import TinyArchitecture, build_model, build_processor, train_tokenizer


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


def _prediction(answer, predicted, modality="CT"):
    return Prediction("q", "d", modality, "Modality Recognition", answer, predicted, "", True)


def test_bootstrap_interval_brackets_the_accuracy_and_narrows_with_more_questions():
    few = [_prediction("A", "A")] * 6 + [_prediction("A", "B")] * 4
    many = few * 20
    low, high = bootstrap_interval(few)
    assert low < 0.6 < high
    low_many, high_many = bootstrap_interval(many)
    assert low_many < 0.6 < high_many and high_many - low_many < high - low
    assert bootstrap_interval([_prediction("A", "A")] * 10) == [1.0, 1.0]


def test_confusion_and_summary_count_every_prediction():
    predictions = [_prediction("A", "A"), _prediction("A", None), _prediction("B", "A", "MRI"), _prediction("B", "B", "MRI")]
    assert letter_confusion(predictions) == {"A": {"A": 1, "none": 1}, "B": {"A": 1, "B": 1}}
    summary = summarize(predictions)
    assert summary["accuracy"] == 0.5 and summary["count"] == 4
    assert summary["per_modality"] == {"CT": 0.5, "MRI": 0.5}
    assert summary["per_modality_question_type"] == {"CT": {"Modality Recognition": 0.5}, "MRI": {"Modality Recognition": 0.5}}


@pytest.fixture(scope="module")
def random_tiny(processed):
    records = list(read_jsonl(processed / "test.jsonl"))
    texts = [r.question + " " + " ".join(r.options.values()) + " <answer>A</answer><think></think>" for r in records]
    tokenizer = train_tokenizer(texts * 5, 512)
    small = TinyArchitecture(intermediate_size=128, num_hidden_layers=2, vision_embed_dim=32, vision_depth=1)
    return build_model(tokenizer, small, seed=3), build_processor(tokenizer, 112), records


def test_bucketed_batches_return_completions_in_record_order(random_tiny, processed):
    model, processor, records = random_tiny
    records = records[:10]
    batched = generate_completions(model, processor, records, processed, "no_think", batch_size=4, max_new_tokens=6,
                                   progress=False)
    single = generate_completions(model, processor, records, processed, "no_think", batch_size=1, max_new_tokens=6,
                                  progress=False)
    assert batched == single


def test_cached_vision_features_give_the_completions_of_plain_generation(random_tiny, processed):
    """Our decoding (image features computed once per image, passed as encoder outputs) against
    the plain path: pixel values through generate, batch by batch, no stopping criterion."""
    from medr1.encoding import ImageCache, encode, prompt_text

    model, processor, records = random_tiny
    records = records[:12]
    ours = generate_completions(model, processor, records, processed, "no_think", batch_size=4, max_new_tokens=6,
                                progress=False)
    cache, plain = ImageCache(processor), []
    for start in range(0, len(records), 4):
        chunk = records[start : start + 4]
        images = [cache.get(str(processed / r.image)) for r in chunk]
        batch = encode(processor, [prompt_text(processor, r.question, r.options, "no_think", i) for r, i in zip(chunk, images)],
                       images, padding_side="left")
        output = model.generate(**batch, max_new_tokens=6, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
        plain += processor.tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert ours == plain


def test_image_files_processed_together_equal_one_by_one(random_tiny, processed):
    """get_files (threads, one processor call per chunk) gives `get`'s tensors, in the asked order,
    repeats included, and processes each file once."""
    import torch

    from medr1.encoding import ImageCache

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


def test_stopping_criterion_marks_only_settled_rows(random_tiny):
    _, processor, _ = random_tiny
    tokenizer = processor.tokenizer
    prompt = [7, 8, 9]
    rows = [prompt + tokenizer(text, add_special_tokens=False)["input_ids"]
            for text in ("<answer>A</answer> B", "<answer>A</answer>", "<answer>A")]
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in rows])
    assert VerdictSettled(tokenizer, len(prompt), "no_think")(ids, None).tolist() == [True, False, False]


def test_grade_uses_the_reward_extractor(processed):
    record = next(iter(read_jsonl(processed / "test.jsonl")))
    graded = grade(record, f"<answer>{record.answer}</answer>", "no_think")
    assert graded.correct and graded.well_formed and graded.dataset == record.dataset
