"""The `medr1-pipeline` flow: every stage of dvc.yaml as its own task, in DVC's order, with the data
checks before anything trains, `dvc pull` and `dvc push` around the stages when a DVC remote is
configured, the new version promoted along register.auto_promote behind its gates (flows/promotion.py),
and the run's metrics, lineage and report as Prefect artifacts.

    python -m flows.pipeline -S train.trl.max_steps=100     # one run on Prefect's ephemeral local API
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import threading
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State

from flows.artifacts import REPORT, data_checks_markdown, drift_markdown, per_modality_rows, run_summary_markdown
from flows.dvc_commands import DvcFailed, has_remote, run_dvc, stages_that_ran, status
from flows.dvc_graph import read_graph
from flows.params_overrides import OverrideError, check_overrides, overridden_params
from flows.promotion import REFUSED, promote_registered, refusal_message
from flows.retries import RETRY_DELAYS, retry_if_transient
from medr1.errors import PipelineError

CHECKED_STAGE = "validate"        # the data checks run as soon as the stages it depends on have run
PUBLISH_STAGE = "register"        # after `dvc push`: a registered version never names data the remote lacks
INGESTED = Path("data/processed")  # the folder the validate stage checks (stages/validate.py)
DRIFT_REPORT = Path("reports/validation/drift.json")  # the register stage puts it into the version's lineage
DRIFT_DOCS = Path("reports/validation/drift_docs")


def dvc_task(**options):
    """A task that runs `dvc`: retried when it failed for a reason that may pass."""
    return task(retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient,
                cache_policy=NO_CACHE, **options)


@dvc_task(name="dvc pull")
def pull(root: Path, targets: list[str]) -> None:
    run_dvc(root, "pull", *targets)


@dvc_task(name="dvc push")
def push(root: Path, targets: list[str]) -> None:
    run_dvc(root, "push", *targets)


@dvc_task(name="sync inputs")
def sync_inputs(root: Path) -> None:
    """`dvc pull` what dvc.lock names, so DVC reruns only what changed since the last pushed run."""
    if has_remote(root):
        run_dvc(root, "pull", "--allow-missing")


@dvc_task(name="dvc status")
def changed_stages(root: Path) -> set[str]:
    """The stages DVC would rerun now, asked once, so unchanged stages cost no `dvc` process."""
    return set(status(root))


@dvc_task(name="dvc repro", task_run_name="dvc repro {stage}")
def repro_stage(root: Path, stage: str, unchanged: bool = False) -> list[str] | State:
    """One stage through `dvc repro --single-item`: DVC runs it when its deps or params changed.
    `unchanged`: `dvc status` found it as dvc.lock has it and nothing upstream ran, so DVC would skip it."""
    if unchanged:
        get_run_logger().info("Stage %r didn't change (dvc status), skipping", stage)
        return []
    try:
        return stages_that_ran(run_dvc(root, "repro", "--single-item", stage))
    except DvcFailed as error:
        return Failed(message=str(error))


@task(name="data checks", cache_policy=NO_CACHE)
def check_data(root: Path) -> State | None:
    """The Great Expectations checkpoint over the ingested data, every run, even when DVC would skip
    the validate stage. A failure stops the run before any training; its artifact names each failed
    expectation."""
    from medr1.config import ParamsError, load_params
    from medr1.data.checks import check_ingested

    if not (root / INGESTED / "train.jsonl").is_file():
        return Failed(message=f"no ingested data in {root / INGESTED}: "
                              f"the stages before {CHECKED_STAGE!r} did not write it")
    try:
        summary = check_ingested(root / INGESTED, load_params(root / "params.yaml"))
    except ParamsError as error:
        return Failed(message=str(error))
    create_markdown_artifact(key="medr1-data-checks", markdown=data_checks_markdown(summary),
                             description="Great Expectations checkpoint before the run")
    if not summary["success"]:
        return Failed(message="data checks failed: " + "; ".join(
            f"{failure['expectation']} ({failure['column'] or 'table'}): {failure['unexpected_count']} offending"
            for failure in summary["failed"]))
    return None


@task(name="data drift", cache_policy=NO_CACHE)
def check_drift(root: Path) -> State | None:
    """The ingested data against the training data of validate.drift.against (docs/drift.md), when that
    names a version: a failed check whose action is `fail` stops the run before any training, naming the
    check, the reference version and both distributions; every check is in the artifact, the report
    (registered with the version) and the GX Data Docs."""
    import shutil

    from medr1.config import load_params
    from medr1.data.drift import check_drift as drift_checks
    from medr1.data.drift import describe
    from medr1.registry.lineage import read_lock

    (root / DRIFT_REPORT).unlink(missing_ok=True)  # never a report of other data
    shutil.rmtree(root / DRIFT_DOCS, ignore_errors=True)
    try:
        params = load_params(root / "params.yaml")
        lock = read_lock(root / "dvc.lock") if (root / "dvc.lock").is_file() else {}
        md5 = lock.get("ingest", {}).get("outs", {}).get(INGESTED.as_posix())  # register matches it
        summary = drift_checks(root / INGESTED, params, root, data_docs=root / DRIFT_DOCS, data_md5=md5)
    except PipelineError as error:
        return Failed(message=f"drift checks: {error}")
    if summary is None:
        against = params.validate_.drift.against
        get_run_logger().info("No drift checks: %s", "validate.drift.against is null" if against is None else
                              f"{against!r} points at no version of {params.register_.name} yet")
        return None
    (root / DRIFT_REPORT).parent.mkdir(parents=True, exist_ok=True)
    (root / DRIFT_REPORT).write_text(json.dumps(summary, indent=1))
    create_markdown_artifact(key="medr1-drift", markdown=drift_markdown(summary),
                             description="The new data against the reference version's training data")
    if summary["reported"]:
        get_run_logger().warning(describe(summary, summary["reported"]))
    if not summary["success"]:
        return Failed(message="drift checks failed, " + describe(summary, summary["failed"]))
    return None


@dvc_task(name="push results")
def push_results(root: Path) -> None:
    """`dvc push` the run's data and models, so the next run (or another machine) can pull them."""
    if has_remote(root):
        run_dvc(root, "push")


@task(name="publish artifacts", cache_policy=NO_CACHE)
def publish_artifacts(root: Path, ran: list[str], skipped: list[str], overrides: list[str]) -> dict:
    create_markdown_artifact(key="medr1-run-summary", markdown=run_summary_markdown(root, ran, skipped, overrides),
                             description="Metrics and lineage of this pipeline run")
    create_table_artifact(key="medr1-per-modality", table=per_modality_rows(root),
                          description="Accuracy per imaging modality on the test split (metrics/eval.json)")
    report = root / REPORT
    if report.is_file():
        create_link_artifact(key="medr1-report", link=report.as_uri(), link_text="Med-R1 evaluation report",
                             description=f"{REPORT} of this run")
    return {"ran": ran, "skipped": skipped, "report": str(report) if report.is_file() else None}


class _Stopped(Exception):
    def __init__(self, state: State):
        self.state = state


def _result(state: State):
    """A task's result; a failed task ends the flow in a Failed state with the task's message."""
    if state.is_failed():
        raise _Stopped(Failed(message=state.message))
    return state.result()


@flow(name="medr1-pipeline")
def medr1_pipeline(overrides: list[str] | None = None, repo: str = ".") -> dict | State:
    """Run dvc.yaml's stages, checking the data before any training.

    overrides: params.yaml changes for this run only, as `dvc exp run -S` takes them ("train.trl.max_steps=100").
    repo: the repository (its dvc.yaml and params.yaml) to run in.
    """
    root = Path(repo).resolve()
    overrides = list(overrides or [])
    try:
        with overridden_params(root / "params.yaml", overrides):
            try:  # the graph of the overridden params: an override of a foreach list adds or removes stages
                graph = read_graph(root)
                before_checks = graph.before(CHECKED_STAGE)
                graph.require(PUBLISH_STAGE)
            except PipelineError as error:
                return Failed(message=str(error))
            after_checks = [stage for stage in graph.order if stage not in before_checks and stage != PUBLISH_STAGE]
            _result(sync_inputs(root, return_state=True))
            changed = _result(changed_stages(root, return_state=True))
            handed_to_dvc: set[str] = set()  # a stage downstream of one of these may change: DVC decides

            def repro(stage: str) -> list[str]:
                unchanged = stage not in changed and not graph.upstream[stage] & handed_to_dvc
                if not unchanged:
                    handed_to_dvc.add(stage)
                return _result(repro_stage(root, stage, unchanged, return_state=True))

            ran: list[str] = []
            for stage in before_checks:
                ran += repro(stage)
            _result(check_data(root, return_state=True))
            _result(check_drift(root, return_state=True))
            for stage in after_checks:
                ran += repro(stage)
            _result(push_results(root, return_state=True))
            ran += repro(PUBLISH_STAGE)
            promotion = _result(promote_registered(root, return_state=True))
            skipped = [stage for stage in graph.order if stage not in ran]
            result = {**_result(publish_artifacts(root, ran, skipped, overrides, return_state=True)),
                      "promotion": promotion}
            if promotion["refused"]:  # the run did its work; the gate kept the new version back
                return Completed(name=REFUSED, message=refusal_message(promotion), data=result)
            return result
    except OverrideError as error:
        return Failed(message=str(error))
    except _Stopped as stop:
        return stop.state


def _import_check_libraries() -> None:
    """Great Expectations takes seconds to import: a thread loads it while Prefect starts its local
    API, and the data checks find it loaded."""
    try:
        import great_expectations  # noqa: F401

        import medr1.data.checks  # noqa: F401
    except ImportError:
        pass  # the checks task imports them itself and reports the problem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=(
        "Run the medr1-pipeline flow once: every dvc.yaml stage as a Prefect task, data checks before any "
        "training, artifacts in the Prefect UI. Without PREFECT_API_URL it runs on Prefect's ephemeral local API."))
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml override for this run, as `dvc exp run -S` takes it (repeatable)")
    parser.add_argument("--set-params-from", metavar="VARIABLE", help="also the overrides in this environment "
                        "variable, split as a shell splits words but never run by one (what `make run-flow SET=...` "
                        "passes)")
    parser.add_argument("--repo", default=".", help="the repository to run in (default: the current folder)")
    arguments = parser.parse_args(argv)
    if arguments.set_params_from:
        arguments.overrides += shlex.split(os.environ.get(arguments.set_params_from, ""))
    try:
        check_overrides(Path(arguments.repo) / "params.yaml", arguments.overrides)  # before Prefect starts
    except OverrideError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    threading.Thread(target=_import_check_libraries, daemon=True).start()
    return exit_status("medr1-pipeline", medr1_pipeline(overrides=arguments.overrides, repo=arguments.repo,
                                                        return_state=True))


def exit_status(flow_name: str, state: State) -> int:
    """A flow run's outcome as a command line says it: its result as JSON, or its message on stderr."""
    if state.is_failed():
        print(f"{flow_name} failed: {state.message}", file=sys.stderr)
        return 1
    if state.name == REFUSED:  # completed, the new version kept back by a gate: said, not an error
        print(f"{flow_name}: {REFUSED}: {state.message}", file=sys.stderr)
    print(f"{flow_name} completed: {json.dumps(state.result(), default=str)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
