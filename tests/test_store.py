"""The object store contract, on both backends: a folder, and S3 over real HTTP (moto's server)."""

import socket
import threading
import time

import pytest

from medr1.registry.backends import open_store
from medr1.registry.store import StoreError


def test_put_get_list_delete(store_url, tmp_path):
    store = open_store(store_url)
    source = tmp_path / "weights.bin"
    source.write_bytes(b"\x00\x01weights")
    store.put_file("models/a/files/weights.bin", source)
    assert store.put_if_absent("models/a/manifest.json", b"{}") is True
    assert store.exists("models/a/files/weights.bin") and not store.exists("models/b/manifest.json")
    assert store.list("models/") == ["models/a/files/weights.bin", "models/a/manifest.json"]
    now = time.time()  # not a timing: list_modified's values are epoch seconds (not ms, nor local time)
    assert all(abs(modified - now) < 120 for modified in store.list_modified("models/").values())
    assert store.get_bytes("models/a/files/weights.bin") == b"\x00\x01weights"
    store.get_file("models/a/manifest.json", tmp_path / "out" / "manifest.json")
    assert (tmp_path / "out" / "manifest.json").read_bytes() == b"{}"
    store.delete("models/a/manifest.json")
    assert store.list("models/") == ["models/a/files/weights.bin"]
    with pytest.raises(KeyError, match="models/a/manifest.json"):
        store.get_bytes("models/a/manifest.json")
    with pytest.raises(KeyError, match="models/missing"):
        store.get_file("models/missing", tmp_path / "missing")


def test_put_if_absent_has_one_winner_among_eight_writers(store_url):
    wins = []

    def write(writer: int) -> None:
        if open_store(store_url).put_if_absent("contested", f"writer {writer}".encode()):
            wins.append(writer)

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert open_store(store_url).get_bytes("contested") == f"writer {wins[0]}".encode()


def test_large_file_goes_up_in_parts(s3_environment, moto_server, tmp_path):
    from medr1.registry.s3_store import MIB, S3Store

    bucket = moto_server.new_bucket()
    store = S3Store(bucket, "p", multipart_threshold=5 * MIB)  # S3's smallest part size
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (11 * MIB // 256))
    store.put_file("big.bin", big)
    etag = moto_server.client().head_object(Bucket=bucket, Key="p/big.bin")["ETag"]
    assert etag.strip('"').endswith("-3")  # a multipart object's ETag counts its parts
    store.get_file("big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(StoreError) as refused:
        open_store("s3://AKIDEXAMPLE:FAKE-SECRET-in-url@bucket/prefix")
    assert "FAKE-SECRET" not in str(refused.value) and "AKIDEXAMPLE" not in str(refused.value)
    assert "s3://bucket/prefix" in str(refused.value)


def test_unreachable_endpoint_fails_with_a_clear_message(s3_environment, monkeypatch):
    monkeypatch.setenv("MEDR1_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MEDR1_S3_MAX_ATTEMPTS", "2")
    with pytest.raises(StoreError, match=r"cannot list models/ in s3://bucket/p \(endpoint http://127.0.0.1:9\)"):
        open_store("s3://bucket/p").list("models/")


def test_an_endpoint_that_never_answers_is_tried_max_attempts_times(s3_environment, monkeypatch):
    """A server that hangs up on every request: the store gives up after MEDR1_S3_MAX_ATTEMPTS tries
    (how long that takes is benchmarks' business, not a test's)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def hang_up() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            accepted.append(connection)
            connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    monkeypatch.setenv("MEDR1_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("MEDR1_S3_MAX_ATTEMPTS", "2")
    try:
        with pytest.raises(StoreError, match=rf"cannot list models/ in s3://bucket/p \(endpoint {endpoint}\)"):
            open_store("s3://bucket/p").list("models/")
    finally:
        listener.close()
    assert len(accepted) == 2


def test_missing_bucket_is_named(s3_environment):
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-here' does not exist"):
        open_store("s3://no-such-bucket-here/p").list("")


def test_bad_retry_setting_is_named(s3_environment, monkeypatch):
    monkeypatch.setenv("MEDR1_S3_READ_TIMEOUT", "soon")
    with pytest.raises(StoreError, match="MEDR1_S3_READ_TIMEOUT='soon' is not a number"):
        open_store("s3://bucket/p")
