"""`medr1 evaluate` outside the pipeline's checkout: a model is asked in the layout its folder records,
or in the one the user names; never in a layout nobody chose."""

import json

import pytest
from conftest import write_untrained_tiny
from typer.testing import CliRunner

from medr1.cli.app import app
from medr1.cli.evaluate import task_outside_a_checkout
from medr1.data.records import read_jsonl
from medr1.errors import PipelineError
from medr1.task.model_task import TASK_FILE, recorded_task

SETTINGS = ["--batch-size", "2", "--max-new-tokens", "2", "--device", "cpu"]


@pytest.fixture
def outside_a_checkout(monkeypatch, tmp_path, processed):
    """A working folder without params.yaml, and a two-question split whose images are under `processed`."""
    monkeypatch.chdir(tmp_path)
    split = tmp_path / "two.jsonl"
    split.write_text("".join(line + "\n" for line in (processed / "test.jsonl").read_text().splitlines()[:2]))
    return split


def _evaluate(*args):
    return CliRunner().invoke(app, ["evaluate", *args])


def test_without_prompts_or_a_recorded_task_it_asks_for_prompts(outside_a_checkout, tmp_path, processed):
    folder = tmp_path / "downloaded-qwen2-vl"  # a checkpoint from elsewhere: nothing says how it was trained
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    for given, named in (([], "pass --reasoning and --prompts"), (["--reasoning", "no_think"], "pass --prompts;")):
        result = _evaluate("--model", str(folder), "--data", str(outside_a_checkout), "--images", str(processed),
                           *SETTINGS, *given)
        message = " ".join(result.output.split())
        assert result.exit_code == 1 and named in message and TASK_FILE in message, message
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_the_task_recorded_in_the_model_folder_is_the_one_asked(outside_a_checkout, tmp_path, processed):
    records = list(read_jsonl(outside_a_checkout))
    folder = write_untrained_tiny(tmp_path / "model", records)
    # med-r1, not the tiny model's own layout: the record, and no default, decides
    (folder / TASK_FILE).write_text(json.dumps({"reasoning": "think_before", "prompts": "med-r1", "rewards": "strict"}))
    result = _evaluate("--model", str(folder), "--data", str(outside_a_checkout), "--images", str(processed),
                       *SETTINGS, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert (summary["reasoning"], summary["prompts"], summary["count"]) == ("think_before", "med-r1", 2)
    given = task_outside_a_checkout(folder, None, None, "tiny", "strict")  # an option given wins over the record
    assert (given.mode, given.prompts, given.purpose) == ("think_before", "tiny", "evaluate")


def test_a_version_registered_before_the_task_file_answers_from_its_manifest(tmp_path):
    manifest = {"version": "abc", "params": {"train": {"reasoning": "no_think", "prompts": "med-r1",
                                                       "rewards": "med-r1", "max_steps": 2}}}
    assert recorded_task(tmp_path, manifest) == {"reasoning": "no_think", "prompts": "med-r1", "rewards": "med-r1"}
    assert recorded_task(tmp_path) == {}
    (tmp_path / TASK_FILE).write_text(json.dumps({"prompts": "demo"}))
    with pytest.raises(PipelineError, match=f"{TASK_FILE} records prompts 'demo', not one of tiny, med-r1"):
        recorded_task(tmp_path, manifest)
