"""The same pipeline change, and no change, through the medr1-pipeline flow and through plain `dvc repro`,
side by side.

    .venv/bin/python benchmarks/flow.py                     # small config, train.trl.max_steps=150, 1 round
    .venv/bin/python benchmarks/flow.py --steps 300 --rounds 2

A scratch copy of the repository (its own git and DVC) gets the small config of the end-to-end
test and is built once with `dvc repro`; one flow run then creates Prefect's local database, as
on any machine after its first run. First, with nothing changed, `dvc status` (the floor: DVC
reading the graph and comparing hashes), a no-op `dvc repro` and a no-op flow run. Then each timed
run changes train.trl.learning_rate to a value not used before (a train param change: train, the study's
cells, evaluate, report and register rerun, README), alternating the side that goes first, and is
timed from the command's start to its exit:

    dvc    params.yaml edited, then `dvc repro`
    flow   `python -m flows.pipeline -S train.trl.learning_rate=...` (what `make run-flow` runs: a fresh
           process on Prefect's ephemeral local API, with the data checks every run adds)

Prints one row per run and the ratio of the median flow time to the median `dvc repro` time, for
the change and for no change.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the end-to-end test's scratch-copy helper and small config: one of each

from conftest import SMALL_PARAMS, copy_repository, merged


def timed(command: list[str], cwd: Path, env: dict) -> tuple[float, list[str]]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    output = result.stdout + result.stderr
    return seconds, sorted(set(re.findall(r"Running stage '([^']+)'", output)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="train.trl.max_steps of the small config (default 150)")
    parser.add_argument("--rounds", type=int, default=1, help="timed runs per side (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    arguments = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="medr1-flow-bench-"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_HOME": str(scratch / ".prefect-home"), "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1",
           "GX_ANALYTICS_ENABLED": "False", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    try:
        repo = copy_repository(scratch / "repo")
        params_file = repo / "params.yaml"
        params = merged(yaml.safe_load(params_file.read_text()), SMALL_PARAMS)
        params["train"]["trl"]["max_steps"] = arguments.steps
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        print(f"setting up in {repo}: dvc repro of the small config, then one flow run ...", flush=True)
        setup_started = time.perf_counter()
        timed(["dvc", "repro"], repo, env)
        timed([sys.executable, "-m", "flows.pipeline", "--repo", str(repo)], repo, env)
        print(f"setup {time.perf_counter() - setup_started:.0f} s", flush=True)

        rows = []
        noop = {"status": ["dvc", "status"], "dvc": ["dvc", "repro"],
                "flow": [sys.executable, "-m", "flows.pipeline", "--repo", str(repo)]}
        for round_index in range(arguments.rounds):
            for side in ("status", "dvc", "flow") if round_index % 2 == 0 else ("flow", "dvc", "status"):
                seconds, ran = timed(noop[side], repo, env)
                rows.append(("nothing changed", side, round_index + 1, seconds, ran))
                print(f"  nothing changed, {side:6s} round {round_index + 1}: {seconds:6.1f} s", flush=True)
        learning_rates = iter(0.01 + 0.001 * index for index in range(1, 100))
        for round_index in range(arguments.rounds):
            sides = ("dvc", "flow") if round_index % 2 == 0 else ("flow", "dvc")
            for side in sides:
                rate = f"{next(learning_rates):.4f}"
                if side == "dvc":
                    params = yaml.safe_load(params_file.read_text())
                    params["train"]["trl"]["learning_rate"] = float(rate)
                    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
                    seconds, ran = timed(["dvc", "repro"], repo, env)
                else:
                    seconds, ran = timed([sys.executable, "-m", "flows.pipeline", "--repo", str(repo),
                                          "-S", f"train.trl.learning_rate={rate}"], repo, env)
                rows.append(("train.trl.learning_rate", side, round_index + 1, seconds, ran))
                print(f"  {side:4s} round {round_index + 1}: {seconds:6.1f} s  ran {', '.join(ran)}", flush=True)
    finally:
        if arguments.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nthe small config, train.trl.max_steps={arguments.steps}, {os.cpu_count()} CPUs")
    names = {"status": "dvc status", "dvc": "dvc repro", "flow": "medr1-pipeline flow (make run-flow)"}
    print(f"{'change':<21}{'how':<37}{'round':>6}{'seconds':>10}  stages run")
    for change, side, round_number, seconds, ran in rows:
        print(f"{change:<21}{names[side]:<37}{round_number:>6}{seconds:>10.1f}  {', '.join(ran)}")
    for change in ("nothing changed", "train.trl.learning_rate"):
        median = {side: statistics.median(seconds for kind, how, _, seconds, _ in rows
                                          if kind == change and how == side) for side in ("dvc", "flow")}
        print(f"\n{change}: median dvc repro {median['dvc']:.1f} s, flow {median['flow']:.1f} s, "
              f"ratio flow / dvc repro {median['flow'] / median['dvc']:.3f}" +
              (" (bar: at most 1.10)" if change == "train.trl.learning_rate" else ""))


if __name__ == "__main__":
    main()
