"""A candidate against the version its alias points at now, on the same questions: the paired gates
(must_beat_current, max_slice_drop), the evidence in the audit log, re-evaluation on the candidate's split,
and concurrent promotions of one alias (file:// and S3 over HTTP)."""

import itertools
import json
import random
import threading

import pytest
from conftest import params_yaml
from typer.testing import CliRunner

from medr1.cli.app import app
from medr1.config import ComparisonSettings, PromotionGates
from medr1.evaluate.paired import compare_predictions
from medr1.registry.backends import open_store
from medr1.registry.comparison import evaluation_key, evaluation_record
from medr1.registry.promotion import PromotionRefused, aliases, history, promote
from medr1.registry.versions import register

SETTINGS = ComparisonSettings(resamples=1000, level=0.95, seed=0)
GATE = {"min_accuracy": 0.0, "min_gain_over_base": 0.0, "require_validation": True, "must_beat_current": True,
        "max_drop": 0.02, "min_improvement": None, "max_slice_drop": 0.05, "min_slice_questions": 30}
GATES = PromotionGates(candidate={**GATE, "must_beat_current": False, "max_slice_drop": None}, staging=GATE,
                       production=GATE)
MODALITIES = ("CT", "MRI", "X-Ray")
TYPES = ("Modality Recognition", "Disease Diagnosis")


def _questions(count_per_modality: int = 120) -> list[dict]:
    return [{"question_id": f"{modality}-{i}", "modality": modality, "question_type": TYPES[i % 2]}
            for modality in MODALITIES for i in range(count_per_modality)]


def _answers(questions: list[dict], rate: dict[str, float], seed: int) -> list[dict]:
    """Predictions right on a `rate[modality]` share of each modality's questions, which ones drawn by `seed`."""
    generator = random.Random(seed)
    predictions = []
    for modality in MODALITIES:
        group = [q for q in questions if q["modality"] == modality]
        right = set(generator.sample(range(len(group)), round(rate[modality] * len(group))))
        predictions += [{**q, "answer": "A", "predicted": "A" if i in right else "B", "correct": i in right}
                        for i, q in enumerate(group)]
    return predictions


def _version(store, folder, predictions: list[dict], split_text: str = "the test split") -> dict:
    """A registered version (model files named by `folder`) with its predictions on a split file."""
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_text(f"weights of {folder.name}")
    split, written = folder.parent / f"{folder.name}-test.jsonl", folder.parent / f"{folder.name}-predictions.jsonl"
    split.write_text(split_text)
    written.write_text("".join(json.dumps(p) + "\n" for p in predictions))
    accuracy = sum(p["correct"] for p in predictions) / len(predictions)
    evaluation = evaluation_record(split, written, {"reasoning": "think_after"})
    evaluation["split"]["path"] = "data/processed/test.jsonl"
    lineage = {"metrics": {"accuracy": accuracy, "base_accuracy": 0.2}, "validation": {"success": True},
               "evaluation": evaluation}
    return register(store, "med-r1", folder / "", lineage, evaluations={evaluation["split"]["md5"]: written})


@pytest.fixture
def store(store_url):
    return open_store(store_url)


def test_worse_refused_naming_the_slices_and_better_granted_with_evidence(store, tmp_path):
    questions = _questions()
    production = _version(store, tmp_path / "production", _answers(questions, dict.fromkeys(MODALITIES, 0.6), 1))
    promote(store, production["version"], "production", GATES, SETTINGS)
    worse = _version(store, tmp_path / "worse", _answers(questions, dict.fromkeys(MODALITIES, 0.45), 2))
    with pytest.raises(PromotionRefused) as refusal:
        promote(store, worse["version"], "production", GATES, SETTINGS)
    message = str(refusal.value)
    assert "must_beat_current" in message and f"of {production['version']}" in message
    for modality in MODALITIES:  # each modality 15 points worse on 120 questions: beyond max_slice_drop, named
        assert f"modality {modality}: 0.450 against 0.600" in message and "n=120" in message

    better = _version(store, tmp_path / "better", _answers(questions, dict.fromkeys(MODALITIES, 0.75), 3))
    granted = promote(store, better["version"], "production", GATES, SETTINGS)
    assert aliases(store)[("med-r1", "production")] == better["version"]
    assert granted["previous"] == production["version"] and granted["generation"] == 2
    comparison = granted["evidence"]["comparison"]
    assert comparison["current_version"] == production["version"] and not comparison["current_reevaluated"]
    assert comparison["split"]["md5"] == better["evaluation"]["split"]["md5"]
    assert comparison["candidate_predictions_sha256"] == better["evaluation"]["predictions_sha256"]
    assert comparison["current_predictions_sha256"] == production["evaluation"]["predictions_sha256"]
    expected = compare_predictions(_answers(questions, dict.fromkeys(MODALITIES, 0.75), 3),
                                   _answers(questions, dict.fromkeys(MODALITIES, 0.6), 1), 1000, 0.95, 0)
    assert {key: comparison[key] for key in expected} == json.loads(json.dumps(expected))
    logged = history(store)
    assert [(e["version"], e["granted"]) for e in logged] == [
        (production["version"], True), (worse["version"], False), (better["version"], True)]
    assert logged[1]["evidence"]["comparison"]["per_modality"]["CT"]["difference"] == -0.15


def test_better_on_average_but_worse_on_one_modality_is_refused_naming_it(store, tmp_path):
    questions = _questions(150)
    production = _version(store, tmp_path / "production", _answers(questions, dict.fromkeys(MODALITIES, 0.6), 1))
    promote(store, production["version"], "staging", GATES, SETTINGS)
    # far better on CT and X-Ray, as if trained without MRI: 20 points worse there
    mixed = _version(store, tmp_path / "mixed", _answers(questions, {"CT": 0.9, "MRI": 0.4, "X-Ray": 0.9}, 2))
    with pytest.raises(PromotionRefused) as refusal:
        promote(store, mixed["version"], "staging", GATES, SETTINGS)
    failures = refusal.value.event["failed_gates"]
    assert len(failures) == 1 and failures[0].startswith("max_slice_drop 0.050: modality MRI: 0.400 against 0.600")
    assert "n=150" in failures[0] and "difference -0.200" in failures[0]
    overall = refusal.value.event["evidence"]["comparison"]["overall"]
    assert overall["difference"] > 0.1 and overall["interval"][0] > 0  # better on average, credibly
    assert aliases(store)[("med-r1", "staging")] == production["version"]


def test_small_slices_are_shown_never_judged(store, tmp_path):
    questions = _questions(20)  # below min_slice_questions (30) in every slice
    production = _version(store, tmp_path / "production", _answers(questions, dict.fromkeys(MODALITIES, 0.8), 1))
    promote(store, production["version"], "staging", GATES, SETTINGS)
    gates = PromotionGates(**{**GATES.model_dump(), "staging": {**GATE, "must_beat_current": False}})
    candidate = _version(store, tmp_path / "candidate", _answers(questions, {"CT": 0.8, "MRI": 0.4, "X-Ray": 0.8}, 2))
    event = promote(store, candidate["version"], "staging", gates, SETTINGS)
    assert event["granted"] and event["evidence"]["comparison"]["per_modality"]["MRI"]["n"] == 20


def test_min_improvement_needs_an_interval_above_zero(store, tmp_path):
    questions = _questions()
    production = _version(store, tmp_path / "production", _answers(questions, dict.fromkeys(MODALITIES, 0.6), 1))
    promote(store, production["version"], "staging", GATES, SETTINGS)
    gates = PromotionGates(**{**GATES.model_dump(), "staging": {**GATE, "min_improvement": 0.01}})
    same = _version(store, tmp_path / "same", _answers(questions, dict.fromkeys(MODALITIES, 0.6), 7))
    with pytest.raises(PromotionRefused, match=r"must_beat_current \(min_improvement \+0.010, interval above 0\)"):
        promote(store, same["version"], "staging", gates, SETTINGS)


def test_current_tested_on_other_questions_is_reevaluated_once(store, tmp_path):
    old_questions, new_questions = _questions(40), _questions(60)
    production = _version(store, tmp_path / "production", _answers(old_questions, dict.fromkeys(MODALITIES, 0.5), 1),
                          split_text="last month's test split")
    promote(store, production["version"], "staging", GATES, SETTINGS)
    candidate = _version(store, tmp_path / "candidate", _answers(new_questions, dict.fromkeys(MODALITIES, 0.8), 2))
    calls = []

    def reevaluate(manifest: dict, split: dict):
        calls.append((manifest["version"], split["md5"]))
        out = tmp_path / f"reevaluated-{len(calls)}.jsonl"
        answers = _answers(new_questions, dict.fromkeys(MODALITIES, 0.5), 3)
        out.write_text("".join(json.dumps(p) + "\n" for p in answers))
        return out

    event = promote(store, candidate["version"], "staging", GATES, SETTINGS, reevaluate)
    split_md5 = candidate["evaluation"]["split"]["md5"]
    assert calls == [(production["version"], split_md5)]
    comparison = event["evidence"]["comparison"]
    assert comparison["current_reevaluated"] and comparison["overall"]["n"] == len(new_questions)
    assert store.exists(evaluation_key(production, split_md5))  # stored beside the version's own predictions
    # promoted again elsewhere: the stored re-evaluation is used, nothing evaluated twice
    promote(store, production["version"], "production", GATES, SETTINGS)
    promote(store, candidate["version"], "production", GATES, SETTINGS, reevaluate)
    assert len(calls) == 1


def test_a_version_without_test_predictions_cannot_replace_one(store, tmp_path):
    production = _version(store, tmp_path / "production", _answers(_questions(), dict.fromkeys(MODALITIES, 0.6), 1))
    promote(store, production["version"], "staging", GATES, SETTINGS)
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "model.safetensors").write_text("old weights")
    legacy = register(store, "med-r1", tmp_path / "legacy",
                      {"metrics": {"accuracy": 0.9, "base_accuracy": 0.2}, "validation": {"success": True}})
    with pytest.raises(Exception, match="registered without its test predictions"):
        promote(store, legacy["version"], "staging", GATES, SETTINGS)


class RacingStore:
    """The real store, with every promotion thread held at a barrier just before its conditional write of an
    alias generation, so the two writes race at the server every round."""

    def __init__(self, store, barrier: threading.Barrier):
        self._store, self._barrier, self._held = store, barrier, threading.local()
        self.url = store.url

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if "/granted/" in key and not getattr(self._held, "once", False):
            self._held.once = True
            self._barrier.wait(timeout=60)
        return self._store.put_if_absent(key, data)

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.mark.parametrize("round_", range(20))
def test_two_promotions_of_one_alias_at_once_leave_one_winner_compared_with_what_it_replaced(
        moto_server, s3_environment, tmp_path, round_):
    url = f"s3://{moto_server.new_bucket()}/registry"
    store = open_store(url)
    questions = _questions(60)
    production = _version(store, tmp_path / "production", _answers(questions, dict.fromkeys(MODALITIES, 0.5), 1))
    promote(store, production["version"], "production", GATES, SETTINGS)
    rivals = [_version(store, tmp_path / f"rival{i}", _answers(questions, dict.fromkeys(MODALITIES, 0.8 + i / 10),
                                                                10 + i)) for i in range(2)]
    barrier, outcomes = threading.Barrier(2), [None, None]

    def attempt(index: int) -> None:
        try:  # each thread its own client, as two machines would
            outcomes[index] = promote(RacingStore(open_store(url), barrier), rivals[index]["version"], "production",
                                      GATES, SETTINGS)
        except PromotionRefused as refusal:
            outcomes[index] = refusal.event

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    granted = sorted((e for e in history(store) if e["granted"]), key=lambda e: e["generation"])
    assert [e["generation"] for e in granted] == list(range(1, len(granted) + 1))  # one event per generation
    for before, after in itertools.pairwise(granted):  # each winner was compared with the version it replaced
        assert after["previous"] == before["version"]
        assert after["evidence"]["comparison"]["current_version"] == before["version"]
    first = granted[1]  # of the two racers, the one that took generation 2 was compared with production
    assert first["previous"] == production["version"]
    loser = next(o for o in outcomes if o["version"] != first["version"])
    assert loser["previous"] == first["version"]  # the other compared again, with the winner
    assert loser["evidence"]["comparison"]["current_version"] == first["version"]
    assert aliases(store)[("med-r1", "production")] == granted[-1]["version"]


def _cli(*args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(app, list(args))
    assert (result.exit_code == 0) == ok, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


def test_cli_refusal_names_slices_and_history_and_audit_show_the_evidence(store, store_url, tmp_path, monkeypatch):
    from medr1.cli import common

    monkeypatch.setattr(common.console, "width", 300)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "params.yaml").write_text(params_yaml({"register": {"store": store_url,
                                                                     "gates": GATES.model_dump()}}))
    monkeypatch.chdir(workspace)
    questions = _questions(100)
    production = _version(store, tmp_path / "production", _answers(questions, dict.fromkeys(MODALITIES, 0.6), 1))
    _cli("registry", "promote", production["version"], "production")
    mixed = _version(store, tmp_path / "mixed", _answers(questions, {"CT": 0.9, "MRI": 0.35, "X-Ray": 0.9}, 2))
    refused = _cli("registry", "promote", mixed["version"], "production", "--page", str(tmp_path / "page"), ok=False)
    assert "max_slice_drop 0.050: modality MRI: 0.350 against 0.600" in refused
    assert "fails max_slice_drop" in refused  # the table, slice by slice
    page = (tmp_path / "page" / "index.html").read_text()
    assert "refused" in page and "modality: MRI" not in page and (tmp_path / "page/figures/comparison.png").is_file()
    history_text = _cli("registry", "history")
    assert "refused:" in history_text and "max_slice_drop" in history_text
    assert f"[vs {production['version']}: +" in history_text  # the comparison, shown (not eaten as rich markup)
    logged = json.loads(CliRunner().invoke(app, ["registry", "history", "--json"]).output)
    assert logged[-1]["evidence"]["comparison"]["current_version"] == production["version"]
    audit = json.loads(CliRunner().invoke(app, ["audit", "model", mixed["version"], "--json"]).output)
    assert audit["promotions"][0]["evidence"]["comparison"]["per_modality"]["MRI"]["n"] == 100
    assert audit["evaluation"]["split"]["md5"] == mixed["evaluation"]["split"]["md5"]
    assert "refused: max_slice_drop" in _cli("audit", "model", mixed["version"])
