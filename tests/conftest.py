import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml
from shared_pipeline import PipelineRun, start_once, stop, wait_for

# The suite's environment, unless the caller set it: offline Hugging Face, no analytics, and one thread
# per process: the suite runs the shared pipeline beside its xdist workers, and OpenMP threads that
# outnumber the cores spin against each other (a training step took 20 times longer). Set for the
# session (test modules are imported after it), given back as it was when the session ends.
SUITE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                     "GX_ANALYTICS_ENABLED": "False", "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1",
                     "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "OMP_NUM_THREADS": "1",
                     # a transient failure's retry waits 1 s, then 2 (flows/retries.py; 30 s and 2 min by default):
                     # the loopback tests wait for the retry they check, not for the clock
                     "MEDR1_RETRY_DELAYS": "1,2"}
SHARED_FOLDER = "MEDR1_TEST_SHARED_PIPELINE"
_own_folder = pytest.StashKey[Path]()
_environment = pytest.StashKey[pytest.MonkeyPatch]()
_started: list = []  # the shared pipeline's process, in the test process that started it


def pytest_configure(config):
    """The suite's environment; the controller (or the only test process) picks the shared run's folder,
    workers inherit it."""
    environment = config.stash[_environment] = pytest.MonkeyPatch()
    for name, value in SUITE_ENVIRONMENT.items():
        if name not in os.environ:
            environment.setenv(name, value)
    if not hasattr(config, "workerinput") and SHARED_FOLDER not in os.environ:
        environment.setenv(SHARED_FOLDER, tempfile.mkdtemp(prefix="medr1-shared-pipeline-"))
        config.stash[_own_folder] = Path(os.environ[SHARED_FOLDER])


def pytest_unconfigure(config):
    if (folder := config.stash.get(_own_folder, None)) is not None:
        shutil.rmtree(folder, ignore_errors=True)
    if (environment := config.stash.get(_environment, None)) is not None:
        environment.undo()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Tests of the shared pipeline run go last, and the run starts now: it runs while the others do."""
    items.sort(key=lambda item: "pipeline_run" in item.fixturenames)
    if any("pipeline_run" in item.fixturenames for item in items):
        process = start_once(Path(os.environ[SHARED_FOLDER]))
        if process is not None:
            _started.append(process)
    if hasattr(config, "workerinput"):
        # Workers yield the CPU to the shared run (started above, at normal priority): the tests that
        # wait for it then wait least, and the other tests fill the time it leaves.
        os.nice(5)


def pytest_sessionfinish(session):
    for process in _started:
        stop(process)

REPO = Path(__file__).resolve().parents[1]

# The pipeline at test size: every stage runs, in about a minute.
SMALL_PARAMS = {
    "ingest": {"synthetic": {"images_per_modality": 4}},
    "validate": {"min_rows_per_modality": 5},
    "base_model": {"architecture": {"intermediate_size": 128, "num_hidden_layers": 2,
                                    "vision_embed_dim": 32, "vision_depth": 1},
                   "warmup": {"images": 16, "steps": 3, "eyesight_steps": 3, "batch_size": 4}},
    "train": {"trl": {"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4, "logging_steps": 1}},
    "sft": {"trl": {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1}},
    "study": {"modalities": ["CT", "MRI"], "question_types": ["Modality Recognition"], "max_steps": 1},
}
STUDY_STAGES = {f"study_{family}_{method}@{group}" for method in ("grpo", "sft") for family, group in
                (("modality", "CT"), ("modality", "MRI"), ("question_type", "Modality Recognition"))}
ALL_STAGES = {"synthesize", "ingest", "validate", "base_model", "sft", "train", "evaluate", "report",
              "register"} | STUDY_STAGES


def merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` applied key by key, nested sections included."""
    for key, value in changes.items():
        base[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def repo_params():
    """params.yaml of this checkout, typed: the one source of every default."""
    from medr1.config import load_params

    return load_params(REPO / "params.yaml")


def with_trl(section, **settings):
    """A train or sft section (TrainParams, SftParams) with `settings` over its trl pass-through."""
    return section.model_copy(update={"trl": {**section.trl, **settings}})


def params_yaml(changes: dict) -> str:
    """This checkout's params.yaml with `changes` applied, as text for a test's own workspace."""
    return yaml.safe_dump(merged(yaml.safe_load((REPO / "params.yaml").read_text()), changes), sort_keys=False)


def tiny_architecture():
    """The tiny model's architecture at test size (SMALL_PARAMS over params.yaml)."""
    return repo_params().base_model.architecture.model_copy(update=SMALL_PARAMS["base_model"]["architecture"])


def write_untrained_tiny(folder: Path, records, training_hook: bool = False) -> Path:
    """A randomly initialised tiny model at test size in `folder`, its tokenizer trained on `records`'
    text (with `training_hook`, the config names the tiny model's training hook, as the base stage saves it)."""
    from medr1.tiny.build import tokenizer_corpus
    from medr1.tiny.model import build_model, build_processor, train_tokenizer
    from medr1.tiny.training import TRAINING_HOOK

    tokenizer = train_tokenizer(tokenizer_corpus(records, 0), 512)
    model = build_model(tokenizer, tiny_architecture(), seed=0)
    if training_hook:
        model.config.medr1_training_hook = TRAINING_HOOK
    model.save_pretrained(folder)
    build_processor(tokenizer, 112).save_pretrained(folder)
    return folder


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
    environment = {**os.environ, **(env or {})}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    result = subprocess.run(cmd, cwd=cwd, env=environment, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
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

    def wait_until_served(self, timeout_s: float = 60) -> None:
        """Until every request that reached the server has been answered. One sent while the server was
        stopped (SIGSTOP) by a client that has since given up lands once it runs again: until then its
        connection, whose client end is closed, waits in CLOSE_WAIT, in the accept queue or in a thread."""
        import time

        import psutil

        port = int(self.url.rsplit(":", 1)[1])

        def waiting() -> bool:
            return any(connection.laddr and connection.laddr.port == port and
                       connection.status == psutil.CONN_CLOSE_WAIT for connection in psutil.net_connections("tcp"))

        deadline = time.monotonic() + timeout_s
        while waiting():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server on {self.url} did not answer the requests sent to it")
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


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness (a temporary database and API) for every test that runs a flow."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def pipeline_run() -> PipelineRun:
    """The one run of the whole pipeline in the test suite, shared by the end-to-end and the flow
    tests (and by every xdist worker): tests/shared_pipeline.py, started at collection. Tests read
    it; a test that changes a repository works in `pipeline_copy`."""
    folder = Path(os.environ[SHARED_FOLDER])
    process = start_once(folder)
    if process is not None:
        _started.append(process)
    return wait_for(folder)


@pytest.fixture
def pipeline_copy(pipeline_run, tmp_path) -> Path:
    """A private copy of the run's repository (git, DVC cache, outputs, store): whatever a test
    changes there, no other test sees."""
    copy = tmp_path / "repo"
    shutil.copytree(pipeline_run.repo, copy, symlinks=True)
    return copy


def batch_and_prompts(processor, records, processed, mode="no_think"):
    """generate's left-padded batch of these records, and the same prompts split into shared heads."""
    from medr1.evaluate.heads import split_prompts
    from medr1.model.encoding import ImageCache, encode, prompt_text
    from medr1.task.spec import TaskSpec

    cache = ImageCache(processor)
    keys = [str(processed / r.image) for r in records]
    images = [cache.get(key) for key in keys]
    texts = [prompt_text(processor, r.question, r.options, TaskSpec(mode, "tiny"), i) for r, i in zip(records, images)]
    prompts = split_prompts(processor, processor.tokenizer(texts, add_special_tokens=False)["input_ids"], images, keys)
    return encode(processor, texts, images, padding_side="left"), prompts


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_process(command: list[str], cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the worker and the server shut down cleanly
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_prefect_server(folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str, dict[str, str]]:
    """A real `prefect server start` on a free loopback port, its home in `folder`, answering its health
    check: (process, API URL, the environment that talks to it)."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**env, "PREFECT_HOME": str(folder / "prefect-home"), "PREFECT_API_URL": api,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
           "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           # no runs of its own: a test triggers the ones it watches (the schedules are read back)
           "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1"}
    server = start_process([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                            "--port", str(port)], folder, env, folder / "server.log")
    deadline = time.monotonic() + 120
    while True:
        if server.poll() is not None or time.monotonic() > deadline:
            stop_process(server)
            raise AssertionError(f"the Prefect server did not answer within 120 s:\n"
                                 f"{(folder / 'server.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return server, api, env
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


@pytest.fixture
def prefect_server(tmp_path):
    """A real `prefect server start` on a free loopback port, its home in a temporary folder."""
    server, api, env = start_prefect_server(tmp_path, dict(os.environ))
    try:
        yield api, env
    finally:
        drain_prefect_workers()
        stop_process(server)


def drain_prefect_workers() -> None:
    """Send what this process's Prefect log and event workers still hold while their server is up. A worker
    left holding a stopped server's address is drained again by Prefect's test harness at the session's end
    (`EventsWorker.drain_all`), which then waits for that server without end (seen: 32 s, and a hang)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    EventsWorker.drain_all(timeout=30)


def forget_stages(repo: Path, stages: list[str], outputs: list[str]) -> None:
    """The stages' dvc.lock entries and these outputs gone, so DVC sees the stages as never run. DVC's own
    YAML code edits dvc.lock: PyYAML would read the sft params' `save_strategy: no` as false."""
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(repo / "dvc.lock") as lock:
        for stage in stages:
            lock["stages"].pop(stage, None)
    for path in outputs:
        target = repo / path
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
