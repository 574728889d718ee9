"""One error path: an expected failure (PipelineError) is one line and exit status 1, in stages and
in every `medr1` command; anything else is a bug and keeps its traceback. And the demo's seam."""

from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from medr1.cli.app import app
from medr1.errors import PipelineError, run_main
from medr1.model.hooks import HOOK_KEY, apply_training_hook


def test_a_stage_prints_an_expected_failure_as_one_line(capsys):
    def main():
        raise PipelineError("train.max_steps must be above 0: set it in params.yaml")

    with pytest.raises(SystemExit) as ended:
        run_main(main, "train")
    assert ended.value.code == 1
    assert capsys.readouterr().err == "[train] error: train.max_steps must be above 0: set it in params.yaml\n"


def test_a_stage_keeps_the_traceback_of_a_bug():
    def main():
        raise ValueError("a bug, not a user's mistake")

    with pytest.raises(ValueError, match="a bug"):
        run_main(main, "train")


def test_every_command_turns_an_expected_failure_into_a_message(tmp_path):
    result = CliRunner().invoke(app, ["registry", "list", "--store", "ftp://example.invalid/models"])
    assert result.exit_code == 1
    assert "error: unsupported store URL 'ftp://example.invalid/models'" in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_command_keeps_the_traceback_of_a_bug(monkeypatch, tmp_path):
    import medr1.registry.versions

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(medr1.registry.versions, "list_versions", broken)
    result = CliRunner().invoke(app, ["registry", "list", "--store", f"file://{tmp_path}"])
    assert isinstance(result.exception, ZeroDivisionError)


def _model(hook=None):
    config = SimpleNamespace(**({HOOK_KEY: hook} if hook else {}))
    return SimpleNamespace(config=config, calls=[])


def record_call(model, tokenizer, records):
    model.calls.append((tokenizer, records))


def test_a_model_without_a_hook_trains_as_it_is():
    model = _model()
    apply_training_hook(model, "tokenizer", ["record"])
    assert model.calls == []


def test_the_hook_a_model_names_runs_once_with_its_tokenizer_and_records(monkeypatch):
    import medr1.pipeline.staging

    monkeypatch.setattr(medr1.pipeline.staging, "probe_hook", record_call, raising=False)
    model = _model("medr1.pipeline.staging:probe_hook")
    apply_training_hook(model, "tokenizer", ["record"])
    assert model.calls == [("tokenizer", ["record"])]


@pytest.mark.parametrize("hook", ["os:system", "tests.test_errors:record_call", "medr1.tiny.training"])
def test_a_hook_outside_medr1_or_without_a_function_is_refused(hook):
    with pytest.raises(PipelineError, match=HOOK_KEY):
        apply_training_hook(_model(hook), "tokenizer", [])
