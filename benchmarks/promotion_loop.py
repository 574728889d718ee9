"""The scheduled loop on the embedded default, on loopback: the medr1-pipeline flow on a real Prefect server
(`prefect server start`), the registry on moto's S3 server, three nightly runs in a clone of this commit:

  1. train.trl.max_steps=100                       registered, promoted to candidate, staging, production
  2. train.trl.max_steps=10                        a worse retrain (fewer steps): must be refused, its slices named
  3. train.trl.max_steps=250 (the default's)       a better retrain: must be promoted

The study is cut to its two CT cells (they never reach the registry; the report stage needs one), and
production's absolute gate is lowered to what 100 steps reach (min_accuracy 0.3, min_gain_over_base 0.05) so
that run 1 can hold it; every comparison gate is params.yaml's. Prints each run's outcome, then the history.

    .venv/bin/python benchmarks/promotion_loop.py /tmp/loop      # about 15-25 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests")]

RUNS = [("production at 100 steps", ["train.trl.max_steps=100"]),
        ("worse: 10 steps", ["train.trl.max_steps=10"]),
        ("better: 250 steps", ["train.trl.max_steps=250"])]


def cpu() -> str:
    lines = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout.splitlines()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")]
    return names[0] if names else platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    workdir = parser.parse_args().workdir.resolve()
    from conftest import MotoServer, merged, start_prefect_server, stop_process
    from dvc.utils.serialize import modify_yaml

    workdir.mkdir(parents=True, exist_ok=True)
    repo = workdir / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(repo)], check=True)
    moto = MotoServer()
    store = f"s3://{moto.new_bucket()}/registry"
    with modify_yaml(repo / "params.yaml") as params:  # DVC's YAML code: PyYAML would turn `save_strategy: no` false
        params["register"]["gates"]["production"].update(min_accuracy=0.3, min_gain_over_base=0.05)
        merged(params, {"study": {"modalities": ["CT"], "question_types": []},
                        "register": {"store": store, "auto_promote": ["candidate", "staging", "production"]}})
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "AWS_ACCESS_KEY_ID": "loop", "AWS_SECRET_ACCESS_KEY": "loop-secret", "AWS_DEFAULT_REGION": "us-east-1",
           "MEDR1_S3_ENDPOINT_URL": moto.url, "HF_HUB_OFFLINE": "1"}
    server, api, env = start_prefect_server(workdir, env)
    print(f"CPU: {cpu()}, {os.cpu_count()} cores; Prefect API {api}; store {store} on {moto.url}")
    try:
        for label, overrides in RUNS:
            command = [sys.executable, "-m", "flows.pipeline", *[f"-S{item}" for item in overrides]]
            started = time.monotonic()
            done = subprocess.run(command, check=False, cwd=repo, env=env, capture_output=True, text=True)
            metrics = json.loads((repo / "metrics/eval.json").read_text())
            said = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("medr1-pipeline")]
            print(f"\n## {label}: {time.monotonic() - started:.0f} s, exit {done.returncode}, GRPO accuracy "
                  f"{metrics['accuracy']:.3f} (base {metrics['base_accuracy']:.3f})")
            print("\n".join(line[:2000] for line in said) or done.stderr[-3000:])
        history = subprocess.run([sys.executable, "-m", "medr1.cli", "registry", "history", "--store", store],
                                 check=False, cwd=repo, env={**env, "COLUMNS": "250"}, capture_output=True, text=True)
        print("\n## medr1 registry history\n" + history.stdout + history.stderr)
    finally:
        stop_process(server)
        moto.stop()


if __name__ == "__main__":
    main()
