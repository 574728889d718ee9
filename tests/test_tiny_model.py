import numpy as np
import torch
from conftest import tiny_architecture

from medr1.model.encoding import ImageCache, encode, prompt_text
from medr1.synthetic.scenes import Scene, render
from medr1.task.prompts import user_prompt
from medr1.task.spec import TaskSpec
from medr1.tiny.model import build_model, build_processor, train_tokenizer

SMALL = tiny_architecture()


def _parts(texts=None):
    tokenizer = train_tokenizer(texts or ["What organ is shown? A)Brain, B)Lung <answer>A</answer>"] * 20, 512)
    return tokenizer, build_processor(tokenizer, 112), build_model(tokenizer, SMALL, seed=0)


def test_tiny_model_is_a_qwen2_vl_that_round_trips(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2VLForConditionalGeneration

    tokenizer, processor, model = _parts()
    assert isinstance(model, Qwen2VLForConditionalGeneration)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    for token in ("<|image_pad|>", "<|vision_start|>", "<|im_end|>", "<answer>", "</answer>"):
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    image = render(Scene.random(np.random.default_rng(0)), np.random.default_rng(0))
    messages = [{"role": "user", "content": [{"type": "image", "image": image},
                                             {"type": "text", "text": "What organ?"}]}]
    batch = loaded_processor.apply_chat_template([messages], add_generation_prompt=True, tokenize=True,
                                                 return_dict=True, return_tensors="pt")
    assert int((batch["input_ids"] == loaded.config.image_token_id).sum()) == 16  # 112x112 -> 8x8 patches -> 16 tokens
    output = loaded.generate(**batch, max_new_tokens=3, do_sample=False)
    assert torch.equal(output, model.generate(**batch, max_new_tokens=3, do_sample=False))  # saved = in memory
    new_tokens = output[0, batch["input_ids"].shape[1]:].tolist()
    assert 1 <= len(new_tokens) <= 3  # three tokens, or fewer when the model ended its turn
    assert len(new_tokens) == 3 or new_tokens[-1] == loaded.generation_config.eos_token_id


def test_cached_encoding_equals_the_processor(tmp_path):
    _, processor, _ = _parts()
    image = render(Scene.random(np.random.default_rng(1)), np.random.default_rng(1))
    cache = ImageCache(processor)
    processed = cache.get("x", image)
    text = prompt_text(processor, "What organ?", {"A": "Brain", "B": "Lung"}, TaskSpec("no_think", "tiny"), processed)
    ours = encode(processor, [text], [processed], padding_side="left")
    user_text = user_prompt("What organ?", {"A": "Brain", "B": "Lung"}, "no_think", "tiny")
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": user_text}]}]
    theirs = processor.apply_chat_template([messages], add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.allclose(ours["pixel_values"], theirs["pixel_values"])


def test_option_binding_head_looks_two_tokens_back():
    _, _, model = _parts()
    model.set_attn_implementation("eager")
    captured = {}
    layer = model.model.language_model.layers[0].self_attn
    layer.register_forward_hook(lambda module, args, kwargs, out: captured.update(weights=out[1]), with_kwargs=True)
    with torch.no_grad():
        model(input_ids=torch.randint(20, 200, (1, 30)), output_attentions=True)
    weights = captured["weights"][0, 0]
    assert all(int(weights[i].argmax()) == i - 2 for i in range(4, 30))


def test_option_reader_survives_training_steps():
    from medr1.tiny.option_reader import LETTER

    _, _, model = _parts()
    first = model.model.language_model.layers[0].self_attn
    wired = first.q_proj.bias[:32].clone(), first.o_proj.weight[LETTER, :32].clone()
    letter_rows = model.get_input_embeddings().weight[:, LETTER].clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)  # decay would shrink frozen weights
    for _ in range(3):
        loss = model(input_ids=torch.randint(20, 200, (2, 12)), labels=torch.randint(20, 200, (2, 12))).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.equal(first.q_proj.bias[:32], wired[0])
    assert torch.equal(first.o_proj.weight[LETTER, :32], wired[1])
    assert torch.equal(model.get_input_embeddings().weight[:, LETTER], letter_rows)
    assert not torch.equal(first.q_proj.bias[64:96], torch.zeros(32))  # the other heads do learn


def test_grpo_on_the_tiny_model_moves_only_option_word_meanings(tmp_path):
    from transformers import AutoModelForImageTextToText

    from medr1.data.records import Record
    from medr1.tiny.training import option_word_ids, train_option_words_only

    prompt = user_prompt("What organ is shown?", {"A": "Brain", "B": "Lung"}, "no_think", "tiny")
    prompt += " <answer>A</answer>"
    tokenizer, _, model = _parts([prompt] * 20)
    record = Record(question_id="q1", dataset="d", modality="CT", question_type="Anatomy Identification",
                    question="What organ is shown?", options={"A": "Brain", "B": "Lung"}, answer="A",
                    image="x.png", image_sha256="0" * 64)
    words = option_word_ids(tokenizer, [record])
    assert set(tokenizer.convert_tokens_to_ids(["ĠBrain", "ĠLung"])) <= set(words)
    assert not set(words) & set(tokenizer.convert_tokens_to_ids(["A", "B", "<answer>", "<|im_end|>"]))
    train_option_words_only(model, tokenizer, [record])
    before = model.get_input_embeddings().weight.detach().clone()
    output_before = model.lm_head.weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    ids = tokenizer(prompt)["input_ids"]
    for _ in range(3):
        model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = (model.get_input_embeddings().weight != before).any(dim=1).nonzero().flatten().tolist()
    assert changed and set(changed) <= set(words)
    assert torch.equal(model.lm_head.weight, output_before)  # what the model says is untouched
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert torch.equal(loaded.lm_head.weight, output_before)
    assert torch.equal(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_picture_vectors_are_what_the_pooling_head_writes():
    """Eyesight trains on picture_vectors; the matching head reads PICTURE. They must agree."""
    from medr1.tiny.option_reader import PICTURE, picture_vectors

    _, processor, model = _parts()
    with torch.no_grad():  # trained eyes give image tokens of unequal norms, which the head weighs unequally
        merger_weight = model.model.visual.merger.mlp[-1].weight
        merger_weight[102:127] += 3 * torch.randn_like(merger_weight[102:127])
    image = ImageCache(processor).process(render(Scene.random(np.random.default_rng(2)), np.random.default_rng(2)))
    text = prompt_text(processor, "What organ?", {"A": "Brain", "B": "Lung"}, TaskSpec("no_think", "tiny"), image)
    captured = {}
    layer = model.model.language_model.layers[0].self_attn
    layer.register_forward_hook(lambda module, args, kwargs, out: captured.update(out=out[0]), with_kwargs=True)
    with torch.no_grad():
        model(**encode(processor, [text], [image]))
        expected = picture_vectors(model, [image])[0]
    written = captured["out"][0, -1, PICTURE]
    assert torch.allclose(written, expected, atol=0.02 * float(expected.abs().max()))  # mean pooling is off by ~80%
