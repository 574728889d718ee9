"""Running the `dvc` command line from a flow: its output goes to the run's log line by line, and a
failure says whether trying again could help."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from medr1.errors import PipelineError, TransientError

# A failure that a second try can cure: the stage was killed (out of memory, pre-empted), another
# `dvc` held the repository's lock, or the remote did not answer. Everything else (a failed data
# check, a bad param, a bug) fails the same way again, so it is not retried.
# A killed stage reads "exited with -9" when DVC's shell execs the command (bash) and "exited with 137"
# (128 + signal) when the shell waits for it and reports the signal itself (dash, the /bin/sh of Debian).
TRANSIENT = re.compile(
    r"exited with (?:-\d+|129|1[3-5]\d)\b|Unable to acquire lock|Connection (?:refused|reset|aborted)|ConnectionError"
    r"|timed out|Temporary failure in name resolution|SlowDown|ServiceUnavailable|RequestTimeout"
    r"|Too Many Requests|\b50[234]\b",
    re.IGNORECASE,
)
RAN = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)


class DvcFailed(PipelineError):
    """`dvc` exited non-zero for a reason that would recur."""


class TransientDvcError(TransientError):
    """`dvc` exited non-zero for a reason that may pass (see TRANSIENT)."""


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("medr1.flows")


def _environment() -> dict[str, str]:
    # Stage commands say `python`: the interpreter running this flow, with its packages. Unbuffered,
    # so a stage's lines reach the log while it runs.
    # No DVC analytics daemon per command: it would try the network and leave a file in /tmp each time.
    bin_dir = str(Path(sys.executable).parent)
    return {"DVC_NO_ANALYTICS": "1", **os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1"}


def run_dvc(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """`dvc <args>` in `root` (with `env` added to this process's environment); every output line is
    logged as it comes. Returns the output; raises TransientDvcError or DvcFailed, with the last lines
    of output, when dvc fails."""
    logger = _logger()
    command = [sys.executable, "-m", "dvc", *args]
    logger.info("$ dvc %s", " ".join(args))
    lines = []
    with subprocess.Popen(command, cwd=root, env={**_environment(), **(env or {})}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as process:
        for raw in process.stdout:
            # A progress bar redraws its line with carriage returns: keep only what it last showed.
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n").rsplit("\r", 1)[-1]
            lines.append(line)
            if line.strip():
                logger.info(line)
    output = "\n".join(lines)
    if process.returncode != 0:
        killed = process.returncode < 0  # a signal ended dvc itself: pre-empted, out of memory
        error = TransientDvcError if killed or TRANSIENT.search(output) else DvcFailed
        tail = "\n".join(lines[-15:])
        raise error(f"`dvc {' '.join(args)}` exited with {process.returncode}:\n{tail}")
    return output


def stages_that_ran(output: str) -> list[str]:
    """The stages a `dvc repro` output says it ran (the rest it skipped as unchanged)."""
    return RAN.findall(output)


def has_remote(root: Path) -> bool:
    """Whether the repository's DVC config (with config.local) names a remote to pull from and push to."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return bool(repo.config.get("remote"))


def status(root: Path, *stages: str) -> dict[str, list]:
    """`dvc status --json`: every stage (of `stages`, or of the pipeline) whose command, params, deps or
    outs differ from dvc.lock."""
    return json.loads(run_dvc(root, "status", "--json", *stages).strip().splitlines()[-1] or "{}")


def changed_paths(stage_status: dict[str, list]) -> set[str]:
    """The dependencies and outputs that a `dvc status` names as changed."""
    changed = set()
    for entries in stage_status.values():
        for entry in entries:
            if isinstance(entry, dict):
                for kind in ("changed deps", "changed outs"):
                    changed.update(entry.get(kind, {}))
    return changed


SECRET_OPTIONS = ("access_key_id", "secret_access_key", "session_token", "password", "user", "token",
                  "credentialpath", "gdrive_client_secret", "sas_token", "account_key", "connection_string")


def remote_options(root: Path, missing: type[PipelineError] = PipelineError) -> dict[str, str]:
    """The default DVC remote's url and non-secret options, as another checkout needs them (`use_remote`):
    credentials stay with each machine's environment. Raises `missing` when there is no default remote."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:  # each level as written (not DVC's defaults), the later level winning
        name = repo.config["core"].get("remote")
        options = {key: str(value) for level in ("system", "global", "repo", "local")
                   for key, value in repo.config.load_one(level)["remote"].get(name, {}).items()}
    if "url" not in options:
        raise missing("this checkout has no default DVC remote: `dvc remote add -d storage s3://bucket/medr1` "
                      "(README, 'DVC remote')")
    return {key: value for key, value in options.items() if key not in SECRET_OPTIONS}


def use_remote(root: Path, options: dict[str, str], cache: Path) -> None:
    """`options` (remote_options of another checkout) as this checkout's default remote, and `cache` as its DVC
    cache, in .dvc/config.local, checked as `dvc remote modify` would."""
    from dvc.config import Config

    with Config(dvc_dir=str(root / ".dvc")).edit("local") as local:
        local["remote"]["fanout"], local["core"]["remote"] = dict(options), "fanout"
        local["cache"]["dir"] = str(cache)
