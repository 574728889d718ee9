import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic OmniMedVQA-layout set (3 images per modality)."""
    from medr1.synthetic.dataset import write_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic(root, images_per_modality=3, seed=1, progress=False)
    return root


@pytest.fixture(scope="session")
def processed(tmp_path_factory, synthetic_root) -> Path:
    from medr1.data.ingest import ingest

    out = tmp_path_factory.mktemp("processed")
    ingest(synthetic_root, out, image_size=384, test_fraction=0.34, seed=0, progress=False)
    return out


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    merged = {**os.environ, **(env or {})}
    merged["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{merged['PATH']}"
    result = subprocess.run(cmd, cwd=cwd, env=merged, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def copy_repository(target: Path) -> Path:
    """The tracked sources of this repository in a fresh folder, as its own git + DVC repo."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        source = REPO / name
        if source.is_file():
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    run(["git", "init", "-q"], target)
    run(["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "add", "-A"], target)
    run(["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qm", "copy"], target)
    if not (target / ".dvc").exists():
        run(["dvc", "init", "-q"], target)
    return target


class MotoServer:
    """moto's standalone S3 server on a free loopback port, in its own process: boto3 and DVC talk real HTTP to it."""

    def __init__(self):
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_up()

    def _wait_until_up(self, timeout_s: float = 30) -> None:
        import time
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).read()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server on {self.url} did not start") from None
                time.sleep(0.05)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client("s3", endpoint_url=self.url, region_name="us-east-1",
                                              aws_access_key_id="test", aws_secret_access_key="test",
                                              config=Config(s3={"addressing_style": "path"}))

    def new_bucket(self) -> str:
        import uuid

        bucket = f"medr1-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def s3_environment(moto_server, monkeypatch, tmp_path) -> dict[str, str]:
    """This process and its children talk to the moto server with recognisable fake credentials."""
    env = {
        "AWS_ACCESS_KEY_ID": "FAKEACCESSKEYID7D1E9Q",
        "AWS_SECRET_ACCESS_KEY": "FAKE-SECRET-3c9f0a7b-never-in-any-output",
        "AWS_SESSION_TOKEN": "FAKE-SESSION-TOKEN-b81d2e",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),  # no profile of this machine's user interferes
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "MEDR1_S3_ENDPOINT_URL": moto_server.url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return env


@pytest.fixture(params=["file", "s3"])
def store_url(request, tmp_path) -> str:
    """A fresh, empty store on each backend: a folder, and a bucket on the moto server."""
    if request.param == "file":
        return f"file://{tmp_path / 'store'}"
    request.getfixturevalue("s3_environment")
    return f"s3://{request.getfixturevalue('moto_server').new_bucket()}/registry"
