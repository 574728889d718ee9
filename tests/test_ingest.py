import json

from PIL import Image

from medr1.data.records import MODALITIES, read_jsonl


def test_ingest_writes_resized_images_and_splits(processed):
    train = list(read_jsonl(processed / "train.jsonl"))
    test = list(read_jsonl(processed / "test.jsonl"))
    assert len(train) + len(test) == 3 * 8 * 5  # 3 images per modality, 5 questions each
    assert train and test
    record = train[0]
    with Image.open(processed / record.image) as image:
        assert image.size == (384, 384) and image.mode == "RGB"
    for modality in MODALITIES:
        assert (processed / "splits" / "modality" / "train" / f"{modality}.jsonl").is_file()
    assert (processed / "splits" / "question_type" / "test" / "Lesion Grading.jsonl").is_file()


def test_splits_do_not_share_images(processed):
    train = {r.image_sha256 for r in read_jsonl(processed / "train.jsonl")}
    test = {r.image_sha256 for r in read_jsonl(processed / "test.jsonl")}
    assert train and test and not train & test


def test_every_modality_is_in_both_splits(processed):
    for side in ("train", "test"):
        assert {r.modality for r in read_jsonl(processed / f"{side}.jsonl")} == set(MODALITIES)


def test_corrupt_image_is_dropped_with_its_reason(tmp_path, synthetic_root):
    import shutil

    from medr1.data.ingest import ingest

    root = tmp_path / "src"
    shutil.copytree(synthetic_root, root)
    victim = next((root / "Images").rglob("*.png"))
    victim.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    summary = ingest(root, tmp_path / "out", 384, 0.34, 0, progress=False)
    assert summary["dropped_total"] == 5  # the five questions about that image
    assert "image does not decode" in summary["dropped"]
    per_file = {name: entry for name, entry in summary["per_file"].items() if entry["dropped"]}
    assert [entry["dropped"] for entry in per_file.values()] == [{"image does not decode": 5}]
    assert all(entry["kept"] == entry["records"] - sum(entry["dropped"].values())
               for entry in summary["per_file"].values())
    assert sum(entry["kept"] for entry in summary["per_file"].values()) == summary["records"]
    assert json.loads(json.dumps(summary)) == summary  # JSON as it is, for metrics/ingest.json


def test_a_grown_source_resizes_only_its_new_images(tmp_path, synthetic_root):
    import shutil

    from medr1.data.ingest import ingest
    from medr1.data.sources.omnimedvqa import QA_FOLDER

    root, cache = tmp_path / "src", tmp_path / "cache"
    shutil.copytree(synthetic_root, root)
    extra = max((root / QA_FOLDER).glob("*.json"))
    held_back = extra.read_text()
    extra.unlink()  # the first ingest sees all datasets but one
    first = ingest(root, tmp_path / "a", 384, 0.34, 0, progress=False, cache=cache)
    assert first["images_from_cache"] == 0 and first["images_processed"] == first["images"]
    extra.write_text(held_back)  # the dataset arrives
    second = ingest(root, tmp_path / "b", 384, 0.34, 0, progress=False, cache=cache)
    new_images = second["images"] - first["images"]
    assert new_images > 0
    assert second["images_processed"] == new_images and second["images_from_cache"] == first["images"]
    assert ({p.name for p in (tmp_path / "b" / "images").iterdir()}
            > {p.name for p in (tmp_path / "a" / "images").iterdir()})
