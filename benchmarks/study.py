"""The default study's cells run one after another (`dvc repro`) against fanned out over two local Prefect
workers (`python -m flows.fan_out`), in one run, and what the fan-out would take on N GPUs.

    .venv/bin/python benchmarks/study.py                       # the default params (12 cells: 6 GRPO, 6 SFT)
    .venv/bin/python benchmarks/study.py --from /tmp/run-x     # a run's DVC cache and dvc.lock: upstream stages

A scratch copy of the repository (its own git and DVC) runs the cells' upstream stages once (skipped
when `--from` brings them). Then, timed:

    serial    `dvc repro --single-item <cell>` for each stale study cell, one after another, as
              `dvc repro` runs them in one checkout, every core for each
    fan-out   the same cells forgotten (dvc.lock entries and outputs), then `python -m flows.fan_out`
              on a real `prefect server start` with two process workers (one cell at a time each,
              half the cores each) and a folder as the DVC remote; timed from start to exit, the
              upstream push, the recording and the report included

It checks that both give the same metrics/study/*.json, and prints each cell's time both ways, then
the fan-out's projected time on N GPUs: the cells' serial times plus each one's measured fan-out
overhead (its pull and push tasks), placed longest first on N slots.
"""

from __future__ import annotations

import argparse
import heapq
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from conftest import copy_repository, forget_stages, run, start_prefect_server, start_process, stop_process
from machine import cpu_model

from flows.dvc_graph import read_graph


def study_cells(repo: Path) -> list[str]:
    return [stage for stage in read_graph(repo).order if stage.startswith("study_")]


def study_metrics(repo: Path) -> dict[str, str]:
    return {str(p.relative_to(repo)): p.read_text() for p in (repo / "metrics/study").rglob("*.json")}


def forget(repo: Path, cells: list[str]) -> None:
    """The cells' and the report's dvc.lock entries and outputs gone: every cell stale."""
    forget_stages(repo, [*cells, "report"], ["models/study", "metrics/study"])


def makespan(durations: list[float], slots: int) -> float:
    """Longest first onto the slot that frees up first."""
    finish = [0.0] * slots
    for duration in sorted(durations, reverse=True):
        heapq.heappush(finish, heapq.heappop(finish) + duration)
    return max(finish)


def cell_timings(api: str) -> dict[str, dict[str, float]]:
    """Each completed cell's seconds as Prefect recorded them: its `dvc pull` and `dvc push` tasks, and the
    rest of its flow run (clone and `dvc repro`) as repro."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterTags
    from prefect.settings import PREFECT_API_URL, temporary_settings

    timings = {}
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as prefect:
        for cell in prefect.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["fan-out"]))):
            if not cell.state.is_completed():
                continue
            tasks = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[cell.id])))
            steps = {step: sum(t.total_run_time.total_seconds() for t in tasks if t.name.startswith(f"dvc {step}"))
                     for step in ("pull", "push")}
            timings[cell.parameters["stage"]] = {"prepare": steps["pull"], "push": steps["push"],
                                                 "repro": cell.total_run_time.total_seconds() - sum(steps.values())}
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path, help="a run of the pipeline whose .dvc/cache and "
                        "dvc.lock bring the upstream stages (they rerun only what changed since)")
    parser.add_argument("--workers", type=int, default=2, help="local process workers (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    arguments = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="medr1-study-bench-"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1"}
    env.pop("OMP_NUM_THREADS", None)
    repo = copy_repository(scratch / "repo")
    if arguments.source:
        shutil.copytree(arguments.source / ".dvc/cache", repo / ".dvc/cache", dirs_exist_ok=True)
        shutil.copy(arguments.source / "dvc.lock", repo / "dvc.lock")
        run(["dvc", "checkout", "--allow-missing"], repo, env=env, check=False)
    cells = study_cells(repo)
    started = time.perf_counter()
    run(["dvc", "repro", *[s for s in read_graph(repo).before(cells[0])]], repo, env=env)
    print(f"upstream stages ready in {time.perf_counter() - started:.0f} s")
    forget(repo, cells)  # a run brought by --from may hold them already

    serial: dict[str, float] = {}
    for cell in cells:
        started = time.perf_counter()
        run(["dvc", "repro", "--single-item", cell], repo, env=env)
        serial[cell] = time.perf_counter() - started
        print(f"serial  {cell}: {serial[cell]:.0f} s", flush=True)
    serial_metrics = study_metrics(repo)
    forget(repo, cells)

    run(["dvc", "remote", "add", "--local", "-d", "bench", str(scratch / "remote")], repo, env=env)
    server, _, prefect_env = start_prefect_server(scratch, env)
    workers = []
    try:
        run([sys.executable, "-m", "flows.deploy"], repo, env=prefect_env)
        threads = str(max(1, (os.cpu_count() or 1) // arguments.workers))
        for index in range(arguments.workers):
            workers.append(start_process(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", "medr1-cells", "--type", "process",
                 "--limit", "1", "--name", f"bench-{index}"], repo,
                {**prefect_env, "OMP_NUM_THREADS": threads, "MEDR1_CELL_WORKSPACES": str(scratch / f"cells-{index}")},
                scratch / f"worker-{index}.log"))
        started = time.perf_counter()
        fan_out = subprocess.run([sys.executable, "-m", "flows.fan_out"], cwd=repo, env=prefect_env,
                                 capture_output=True, text=True, check=False)
        fanned = time.perf_counter() - started
        if fan_out.returncode != 0:
            raise SystemExit(f"the fan-out failed:\n{fan_out.stdout[-3000:]}\n{fan_out.stderr[-3000:]}")
        timings = cell_timings(prefect_env["PREFECT_API_URL"])
    finally:
        for process in (*workers, server):
            stop_process(process)
    fanned_metrics = study_metrics(repo)
    same = fanned_metrics == serial_metrics

    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} cores; {len(cells)} cells; fan-out over {arguments.workers} "
          f"local workers ({threads} threads each)\n")
    print("| cell | serial s | fan-out: pull / clone + repro / push s |\n|---|---|---|")
    overheads = {}
    for cell in cells:
        seconds = timings[cell]
        overheads[cell] = seconds["prepare"] + seconds["push"]
        print(f"| {cell} | {serial[cell]:.0f} | {seconds['prepare']:.0f} / {seconds['repro']:.0f} / "
              f"{seconds['push']:.0f} |")
    total = sum(serial.values())
    print("\n| study | wall s | vs serial |\n|---|---|---|")
    print(f"| serial `dvc repro` of the cells | {total:.0f} | 1.00x |")
    print(f"| fan-out, {arguments.workers} local workers, measured | {fanned:.0f} | {total / fanned:.2f}x |")
    alone = [serial[cell] + overheads[cell] for cell in cells]
    for gpus in sorted({2, 4, 8, len(cells), 13}):
        projected = makespan(alone, gpus)
        print(f"| fan-out on {gpus} GPUs, projected from the cells' times | {projected:.0f} | "
              f"{total / projected:.2f}x |")
    print(f"\nmetrics/study/*.json identical serial and fanned out: {same}"
          + ("" if same or threads == str(os.cpu_count()) else
             f" (torch's sums run on {os.cpu_count()} threads serially and {threads} in each worker; "
             "tests/test_fan_out.py compares both at one thread)"))
    if not arguments.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        print(f"kept {scratch}")


if __name__ == "__main__":
    main()
