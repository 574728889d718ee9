"""The images evaluation feeds the model: under Med-R1's grading protocols those of its evaluation
scripts (qwen_vl_utils' fetch_image before the processor), under `strict` the processor's own, as before.

The yardstick is the transcription of the scripts' inputs in tests/medr1_reference.py
(`evaluation_batch`, `fetch_image`)."""

import medr1_reference as reference
import pytest
import torch
from conftest import tiny_architecture
from PIL import Image

from medr1.data.records import read_jsonl
from medr1.errors import PipelineError
from medr1.evaluate.decoding import evaluation_images, generate_completions
from medr1.model.encoding import ImageCache, prompt_text
from medr1.model.published_images import fetch_image
from medr1.task.prompts import medr1_problem
from medr1.task.spec import TaskSpec
from medr1.tiny.model import build_model, build_processor, train_tokenizer

MEDR1 = TaskSpec("no_think", "med-r1", "evaluate", "med-r1", "med-r1")
STRICT = TaskSpec("no_think", "tiny")


@pytest.fixture(scope="module")
def qwen2vl_processor(processed):
    """The tiny tokenizer with Qwen2-VL-2B-Instruct's image settings (preprocessor_config.json: min_pixels
    3136, max_pixels 12845056, transformers 5's torchvision image processor, as AutoProcessor loads it)."""
    records = list(read_jsonl(processed / "test.jsonl"))
    texts = [medr1_problem(r.question, r.options) + " <answer>A</answer>" for r in records]
    processor = build_processor(train_tokenizer(texts * 5, 512), 112)
    processor.image_processor.size = {"shortest_edge": 3136, "longest_edge": 12845056}
    return processor


@pytest.fixture(scope="module")
def images(processed, tmp_path_factory) -> list[str]:
    """Ingest's 384x384 images, and sizes and modes Med-R1's loader treats otherwise (transparency, small)."""
    paths = sorted({str(processed / r.image) for r in read_jsonl(processed / "test.jsonl")})[:3]
    folder = tmp_path_factory.mktemp("odd")
    gradient = Image.radial_gradient("L")
    rgba = Image.merge("RGBA", [gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient,
                                gradient.transpose(Image.Transpose.FLIP_TOP_BOTTOM)]).resize((500, 300))
    rgba.save(folder / "rgba.png")
    Image.merge("RGB", [gradient] * 3).resize((60, 90)).save(folder / "small.png")
    return paths + [str(folder / "rgba.png"), str(folder / "small.png")]


def _pixels(cache: ImageCache, paths: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    processed = cache.get_files(paths)
    return torch.cat([image.pixel_values for image in processed]), torch.cat([image.grid_thw for image in processed])


def test_under_med_r1_grading_the_images_are_med_r1s(qwen2vl_processor, images):
    data = [{"image": path, "problem": "Which? A)x, B)y"} for path in images]
    theirs = reference.evaluation_batch(data, qwen2vl_processor)
    pixels, grids = _pixels(evaluation_images(qwen2vl_processor, MEDR1), images)
    assert torch.equal(grids, theirs["image_grid_thw"])
    assert torch.equal(pixels, theirs["pixel_values"])
    assert grids[0].tolist() == [1, 28, 28]  # 384 -> 392 by fetch_image's resize


def test_a_fetched_image_passes_the_processor_unchanged(qwen2vl_processor, images):
    """fetch_image resizes to the size the processor's smart_resize picks, so the processor (torchvision:
    a resize to the same size returns the image) does not resize it again."""
    fetched = [fetch_image(path) for path in images]
    resized = qwen2vl_processor.image_processor(images=fetched, return_tensors="pt")
    as_is = qwen2vl_processor.image_processor(images=fetched, do_resize=False, return_tensors="pt")
    assert torch.equal(resized["pixel_values"], as_is["pixel_values"])


def test_strict_grading_opens_images_as_before(qwen2vl_processor, images):
    """The embedded default's path: each file as RGB at its own size, resized by the processor alone."""
    cache = evaluation_images(qwen2vl_processor, STRICT)
    assert cache.load is ImageCache(qwen2vl_processor).load
    for path in images[:3]:
        with Image.open(path) as opened:
            alone = qwen2vl_processor.image_processor(images=[opened.convert("RGB")], return_tensors="pt")
        ours = cache.get(path)
        assert torch.equal(ours.pixel_values, alone["pixel_values"])
        assert not torch.equal(ours.pixel_values, evaluation_images(qwen2vl_processor, MEDR1).get(path).pixel_values)


def test_evaluation_feeds_the_model_med_r1s_prompt_and_pixels(qwen2vl_processor, processed, monkeypatch):
    """What the decoder hands the model under `med-r1`: each prompt's tokens and each image's pixels are
    those Med-R1's script builds for the same questions."""
    records = sorted(read_jsonl(processed / "test.jsonl"), key=lambda r: r.image)[:6]
    model = build_model(qwen2vl_processor.tokenizer, tiny_architecture(), seed=3)
    fed = []
    features = model.get_image_features

    def recording(pixel_values, image_grid_thw, **kwargs):
        fed.extend(zip(pixel_values.split(image_grid_thw.prod(dim=1).tolist()), image_grid_thw.tolist()))
        return features(pixel_values, image_grid_thw, **kwargs)

    monkeypatch.setattr(model, "get_image_features", recording)
    generate_completions(model, qwen2vl_processor, records, processed, MEDR1, batch_size=4, max_new_tokens=2,
                         progress=False)
    data = [{"image": str(processed / r.image), "problem": medr1_problem(r.question, r.options)} for r in records]
    theirs = reference.evaluation_batch(data, qwen2vl_processor)
    their_images = dict(zip([d["image"] for d in data], zip(
        theirs["pixel_values"].split(theirs["image_grid_thw"].prod(dim=1).tolist()),
        theirs["image_grid_thw"].tolist())))
    assert len(fed) == len(their_images)  # each distinct image once
    for pixels, grid in fed:
        assert any(torch.equal(pixels, expected) and grid == expected_grid
                   for expected, expected_grid in their_images.values())
    cache = evaluation_images(qwen2vl_processor, MEDR1)
    for record, row in zip(records, theirs["input_ids"], strict=True):
        image = cache.get(str(processed / record.image))
        ours = qwen2vl_processor.tokenizer(prompt_text(qwen2vl_processor, record.question, record.options, MEDR1,
                                                       image), add_special_tokens=False)["input_ids"]
        pad = qwen2vl_processor.tokenizer.pad_token_id
        assert ours == [token for token in row.tolist() if token != pad]


def test_a_cache_that_opens_images_otherwise_is_refused(qwen2vl_processor, processed):
    records = list(read_jsonl(processed / "test.jsonl"))[:1]
    model = build_model(qwen2vl_processor.tokenizer, tiny_architecture(), seed=3)
    with pytest.raises(PipelineError, match="evaluate.protocol med-r1 needs fetch_image"):
        generate_completions(model, qwen2vl_processor, records, processed, MEDR1, cache=ImageCache(qwen2vl_processor),
                             progress=False)
