"""Checkpoint folders shaped like a Qwen2-VL / Qwen2.5-VL download (medr1/synthetic/checkpoints.py):
a realistic byte-level BPE vocabulary, each family's chat template, image settings and shipped
generation config. The fast evaluation decodes what plain `generate` decodes on both families."""

import pytest
from conftest import batch_and_prompts

from medr1.data.records import read_jsonl
from medr1.model.qwen_files import FAMILIES

QUESTIONS = 200  # the bar: extracted answers and verdicts equal generate's on 200 questions per layout
TOKEN_QUESTIONS = 50  # the stricter token-for-token comparison, on a quarter of them
NEW_TOKENS = 10


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory, processed):
    from medr1.model.loading import load_for_evaluation
    from medr1.synthetic.checkpoints import write_checkpoint

    records = list(read_jsonl(processed / "test.jsonl")) + list(read_jsonl(processed / "train.jsonl"))
    texts = [r.question + " " + " ".join(r.options.values()) for r in records]
    folder = write_checkpoint(request.param, tmp_path_factory.mktemp(request.param), texts)
    model, processor = load_for_evaluation(folder, "cpu")
    return request.param, model, processor, (records * (QUESTIONS // len(records) + 1))[:QUESTIONS]


def test_the_folder_has_a_realistic_vocabulary_and_the_shipped_generation_config(checkpoint):
    from medr1.model.qwen_files import GENERATION_DEFAULTS

    family, model, processor, _ = checkpoint
    tokenizer = processor.tokenizer
    assert len(tokenizer) >= 8000
    for text in ("<answer>", "</think>"):  # ordinary text, several tokens, as in Qwen's own vocabulary
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) > 1
    config = model.generation_config
    assert {key: getattr(config, key) for key in GENERATION_DEFAULTS[family]} == GENERATION_DEFAULTS[family]


@pytest.mark.parametrize("mode", ["think_before", "no_think", "think_after"])
def test_fast_evaluation_decodes_what_generate_decodes(checkpoint, processed, mode):
    """Our decoder (shared heads, cached image features, drafts, early stop once the verdict is
    settled) against `generate` with the folder's own generation config, greedy as Med-R1 evaluates:
    each of our completions is the start of generate's, and both grade the same."""
    from medr1.evaluate.decoding import generate_completions, plain_completions
    from medr1.model.encoding import ImageCache
    from medr1.task.spec import TaskSpec

    _, model, processor, records = checkpoint
    task = TaskSpec(mode, "tiny")  # what these tests compared before prompts had to be named
    cache = ImageCache(processor)
    ours = generate_completions(model, processor, records, processed, task, batch_size=16,
                                max_new_tokens=NEW_TOKENS, cache=cache, progress=False)
    plain = plain_completions(model, processor, records, processed, task, 16, NEW_TOKENS, cache)
    assert all(full.startswith(short) for short, full in zip(ours, plain, strict=True))
    def grades(texts):
        return [task.grade(text, r.answer, "".join(r.options)) for text, r in zip(texts, records)]

    assert grades(ours) == grades(plain)
    assert sum(len(text) for text in ours) > 0  # the models wrote something to compare


@pytest.mark.parametrize("mode", ["think_before", "no_think", "think_after"])
def test_drafted_greedy_tokens_are_generates_tokens(checkpoint, processed, mode):
    """Token for token, without the early stop: rows sharing image heads, drafts of the format's
    shortest answer, M-RoPE positions and the shipped repetition penalty give generate's tokens."""
    from medr1.evaluate.decoding import greedy_repetition_penalty
    from medr1.evaluate.greedy import FormatDrafts, greedy_decode

    _, model, processor, records = checkpoint
    records = sorted(records[:TOKEN_QUESTIONS], key=lambda r: r.image)  # questions about one image share a head
    tokenizer = processor.tokenizer
    ends = set(model.generation_config.eos_token_id)
    drafts = FormatDrafts(tokenizer, mode, ["".join(r.options) for r in records],
                          tokenizer.convert_tokens_to_ids("<|im_end|>"))
    penalty = greedy_repetition_penalty(model.generation_config)
    for start in range(0, len(records), 25):
        chunk = records[start : start + 25]
        batch, prompts = batch_and_prompts(processor, chunk, processed, mode)
        output = model.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False)
        plain = [next(([*row[:i + 1]] for i, token in enumerate(row) if token in ends), row)
                 for row in output[:, batch["input_ids"].shape[1] :].tolist()]
        ours = greedy_decode(model, prompts, drafts.for_rows(list(range(start, start + len(chunk)))), ends,
                             NEW_TOKENS, lambda lists: [False] * len(lists), tokenizer.pad_token_id, penalty)
        assert ours == plain, start


@pytest.mark.parametrize("style", ["med-r1", "tiny"])
def test_prompt_lengths_are_the_processors_own(checkpoint, processed, style):
    """train.max_prompt_length is checked on lengths computed from image headers: they equal the
    processor's input ids, image tokens included."""
    from PIL import Image

    from medr1.task.prompts import chat_prompt
    from medr1.train.prompt_lengths import prompt_lengths

    _, _, processor, records = checkpoint
    records = records[:24]
    texts = [processor.apply_chat_template(chat_prompt(r.question, r.options, "think_before", style), tokenize=False,
                                           add_generation_prompt=True) for r in records]
    images = [Image.open(processed / r.image).convert("RGB") for r in records]
    encoded = processor(text=texts, images=images, add_special_tokens=False, padding=True, return_tensors="pt")
    assert prompt_lengths(processor, records, processed, "think_before", style) == \
        encoded["attention_mask"].sum(dim=1).tolist()


def test_an_architecture_the_fast_decoder_does_not_know_is_evaluated_with_generate(checkpoint, processed,
                                                                                   monkeypatch, capsys):
    from medr1.evaluate import decoding
    from medr1.task.spec import TaskSpec

    task = TaskSpec("no_think", "tiny")
    _, model, processor, records = checkpoint
    monkeypatch.setattr(decoding, "FAST_DECODING", set())
    monkeypatch.setattr(decoding, "_told", set())
    records = records[:6]
    first = decoding.generate_completions(model, processor, records, processed, task, batch_size=4,
                                          max_new_tokens=NEW_TOKENS, progress=False)
    again = decoding.generate_completions(model, processor, records, processed, task, batch_size=4,
                                          max_new_tokens=NEW_TOKENS, progress=False)
    said = capsys.readouterr().out
    assert said.count("evaluating with plain generate") == 1 and model.config.model_type in said  # said once
    assert first == again == decoding.plain_completions(model, processor, records, processed, task, 4,
                                                        NEW_TOKENS)
