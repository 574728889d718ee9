"""Med-R1's SFT baseline (sft.style: med-r1) builds the batches its sft.py builds, and trains.

The yardstick is the transcription of sft.py's convert_example and collate_fn, and of
qwen_vl_utils' image resize, in tests/medr1_reference.py, run on real split records.
"""

import json
from pathlib import Path

import medr1_reference as reference
import pytest

from medr1.model.published_images import fetch_image_size
from medr1.train.published_sft import PublishedSftCollator

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("height, width", [
    (384, 384), (392, 392), (10, 10), (1, 150), (10, 2000), (27, 29), (500, 333), (4000, 3000), (8000, 8000),
    (20000, 600), (3, 5),
])
def test_image_size_is_qwen_vl_utils_fetch_image_resize(height, width):
    assert fetch_image_size(height, width) == reference.smart_resize(height, width)


@pytest.fixture(scope="module")
def published_examples(tmp_path_factory):
    """Real split records with images of the sizes OmniMedVQA has (Med-R1 resizes to 384; others too)."""
    from PIL import Image

    from medr1.tiny.model import build_processor, train_tokenizer

    records = json.loads((FIXTURES / "medr1_split_records.json").read_text())[:4]
    folder = tmp_path_factory.mktemp("images")
    examples = []
    for index, (record, size) in enumerate(zip(records, [(384, 384), (500, 300), (384, 384), (60, 90)],
                                               strict=True)):
        path = folder / f"{index}.png"
        image = Image.radial_gradient("L").resize(size)
        if index == 1:  # transparency, which Med-R1's loader puts on white
            image = Image.merge("RGBA", [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), image,
                                         image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)])
        else:
            image = Image.merge("RGB", [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), image])
        image.save(path)
        examples.append({"problem": record["problem"], "solution": record["solution"], "image": str(path)})
    corpus = [example["problem"] + example["solution"] for example in examples] * 4
    processor = build_processor(train_tokenizer(corpus, 600), 112)
    return examples, processor


def test_batch_equals_med_r1s_collate_fn(published_examples):
    examples, processor = published_examples
    ours = PublishedSftCollator(processor)(examples)
    theirs = reference.collate_fn([dict(example) for example in examples], processor,
                                  lambda item: reference.fetch_image(item))
    assert set(ours) == set(theirs)
    for key in theirs:
        assert ours[key].shape == theirs[key].shape and (ours[key] == theirs[key]).all(), key


def test_the_loss_covers_every_token_but_padding_and_image(published_examples):
    examples, processor = published_examples
    collator = PublishedSftCollator(processor)
    text = collator.texts(examples[:1])[0]
    assert text.startswith("<|im_start|>system\nYour task: Provide the correct single-letter choice")
    # Med-R1's records carry no `thinking`: its target starts with "None"; the generation prompt follows it
    assert text.endswith(f"<|im_start|>assistant\nNone\n\n{examples[0]['solution']}<|im_end|>\n"
                         "<|im_start|>assistant\n")
    assert text.index(examples[0]["problem"]) < text.index("<|vision_start|>")  # text before image
    batch = collator(examples)
    tokenizer = processor.tokenizer
    ids, labels = batch["input_ids"], batch["labels"]
    image_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    trained = (ids != tokenizer.pad_token_id) & (ids != image_id)
    assert ((labels == ids) == trained).all() and (labels[~trained] == -100).all()
    system_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert (labels[:, :1] == system_start).any()  # padding is on the right or left, the prompt is trained


def test_an_image_med_r1s_loader_refuses_is_named(tmp_path):
    from PIL import Image

    from medr1.data.images import ImageError
    from medr1.model.published_images import fetch_image

    Image.new("RGB", (2010, 10)).save(tmp_path / "strip.png")
    with pytest.raises(ImageError, match=r"strip.png: 2010x10 is more than 200 times"):
        fetch_image(str(tmp_path / "strip.png"))
