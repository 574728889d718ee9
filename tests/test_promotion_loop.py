"""The scheduled loop end to end on loopback: the pipeline flow on a real Prefect server, the registry on the
S3 server. A first run registers a version and promotes it to production; a second run on a new split retrains,
re-evaluates production on the new questions, and is refused by production's gate: the run ends in the
"Promotion refused" state with its message, the slice table is an artifact on the server, and the history
holds both attempts with their evidence."""

import json

import pytest
from conftest import merged
from prefect_queries import artifacts
from typer.testing import CliRunner

from medr1.cli.app import app

LENIENT = {"min_accuracy": 0.0, "min_gain_over_base": -1.0, "require_validation": True, "must_beat_current": False,
           "max_drop": 1.0, "min_improvement": None, "max_slice_drop": None, "min_slice_questions": 1}


def _history(store_url: str) -> list[dict]:
    result = CliRunner().invoke(app, ["registry", "history", "--json", "--store", store_url])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.slow
def test_scheduled_retrain_is_compared_with_production_on_its_questions_and_refused_with_its_slices(
        pipeline_copy, prefect_server, s3_environment, moto_server, monkeypatch):
    from dvc.utils.serialize import modify_yaml
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import medr1_pipeline
    from flows.promotion import REFUSED

    repo = pipeline_copy
    store_url = f"s3://{moto_server.new_bucket()}/registry"
    with modify_yaml(repo / "params.yaml") as params:  # DVC's YAML code: PyYAML would turn `save_strategy: no` false
        merged(params, {"register": {
            "store": store_url, "auto_promote": ["candidate", "staging", "production"],
            "gates": {"candidate": LENIENT, "staging": LENIENT, "production": {**LENIENT, "must_beat_current": True}},
        }})
    monkeypatch.chdir(repo)
    api, _ = prefect_server
    with temporary_settings({PREFECT_API_URL: api}):
        first = medr1_pipeline(repo=str(repo), return_state=True)
        assert first.is_completed() and first.name != REFUSED, first.message
        production = first.result()["promotion"]
        assert production["granted"] == ["candidate", "staging", "production"]

        # The nightly run on new questions (another split), with a gate this retrain cannot meet.
        # (the study cells, which never reach the registry, left out of this run)
        second = medr1_pipeline(repo=str(repo), overrides=["ingest.seed=11", "study.modalities=[]",
                                                           "study.question_types=[]",
                                                           "register.gates.production.min_improvement=0.5"],
                                return_state=True)
        assert second.is_completed() and second.name == REFUSED, (second.name, second.message)
        assert "not promoted to production: must_beat_current (min_improvement +0.500" in second.message
        outcome = second.result()["promotion"]
        assert outcome["granted"] == ["candidate", "staging"] and outcome["refused"]["alias"] == "production"
        published = artifacts(second.state_details.flow_run_id)
    slices = json.loads(published["medr1-promotion-production-slices"].data)
    modalities = {row["group"]: row for row in slices if row["slice"] == "modality"}
    assert slices[0]["slice"] == "overall" and modalities and all(row["n"] > 0 for row in modalities.values())
    assert "refused" in published["medr1-promotion-production"].data
    assert (repo / "reports/promotion/production/index.html").is_file()

    events = _history(store_url)
    granted = [e for e in events if e["alias"] == "production" and e["granted"]]
    refused = [e for e in events if e["alias"] == "production" and not e["granted"]]
    assert [e["version"] for e in granted] == [production["version"]] and len(refused) == 1
    comparison = refused[0]["evidence"]["comparison"]
    assert comparison["current_version"] == production["version"] == refused[0]["previous"]
    assert comparison["current_reevaluated"]  # production was tested on the old split: evaluated on the new one
    test_split = repo / "data/processed/test.jsonl"
    from medr1.registry.comparison import md5_of

    assert comparison["split"]["md5"] == md5_of(test_split)
    assert comparison["overall"]["n"] == sum(1 for line in test_split.read_text().splitlines() if line.strip())
    assert modalities == {group: {"slice": "modality", "group": group,
                                  "candidate": numbers["accuracy_a"], "current": numbers["accuracy_b"],
                                  "difference": numbers["difference"], "interval low": numbers["interval"][0],
                                  "interval high": numbers["interval"][1], "n": numbers["n"],
                                  "McNemar p": numbers["mcnemar_p"], "outcome": modalities[group]["outcome"]}
                          for group, numbers in comparison["per_modality"].items()}
