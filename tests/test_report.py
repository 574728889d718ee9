"""The report: every number equals its metric, and it renders in a real headless browser."""

import json
import os
import random
from html import unescape

import numpy as np
import pytest
from conftest import repo_params
from PIL import Image
from report_checks import CHROMIUM, check_intervals, check_numbers, parse, render_in_chromium

from medr1.data.records import MODALITIES, QUESTION_TYPES
from medr1.errors import PipelineError
from medr1.evaluate.evaluation import paired_comparisons
from medr1.evaluate.metrics import Prediction, gain_over_base, summarize, training_group_accuracy
from medr1.evaluate.paired import bootstrap_mean_interval, compare_predictions, paired_difference
from medr1.report.build import build_report, per_group
from medr1.report.content import Metrics
from medr1.report.render import write_report
from medr1.study.generalization import generalization
from medr1.train.curves import write_training_curves


def _predictions(skill: float, seed: int) -> list[Prediction]:
    generator = random.Random(seed)
    predictions = []
    for index in range(400):
        modality, kind = MODALITIES[index % 8], QUESTION_TYPES[index % 5]
        answer = "ABCD"[index % 4]
        predicted = answer if generator.random() < skill else generator.choice(["A", "B", "C", "D", None])
        predictions.append(Prediction(f"q{index}", f"set-{index % 3}", modality, kind, answer, predicted, "",
                                      predicted is not None, predicted == answer, predicted is not None))
    return predictions


def write_cells(cells_dir, study, base: list[Prediction]) -> None:
    """metrics/study/<family>/<group>/<method>.json for every cell of `study`, as stages/study.py writes them,
    each cell answering the test questions `base` (the base model's predictions) holds of each group."""
    budgets = {"grpo": {"questions_per_step": 16.0, "steps": study.max_steps, "questions": 16 * study.max_steps,
                        "epochs": None},
               "sft": {"questions_per_step": 8, "steps": 2 * study.max_steps, "questions": 16 * study.max_steps,
                       "epochs": None}}
    for family, groups in (("modality", study.modalities), ("question_type", study.question_types)):
        for index, trained_on in enumerate(groups):
            for method, bonus in (("grpo", 0.2), ("sft", 0.3)):
                generator = random.Random(f"{family} {trained_on} {method}")
                answers = {}
                for g in groups:
                    ids = [p.question_id for p in base if getattr(p, family) == g]
                    right = round(len(ids) * (0.3 + 0.1 * index + (bonus if g == trained_on else 0)))
                    flags = ["1"] * right + ["0"] * (len(ids) - right)
                    generator.shuffle(flags)
                    answers[g] = {"question_ids": ids, "correct": "".join(flags)}
                cell = {"family": family, "trained_on": trained_on, "method": method,
                        "study": {"max_steps": study.max_steps, "num_train_epochs": study.num_train_epochs},
                        "budget": budgets[method],
                        # the SFT model of the last modality writes what the protocol cannot read (flagged)
                        "unreadable_share": 0.95 if (method, trained_on) == ("sft", study.modalities[-1]) else 0.0,
                        "mostly_unreadable": (method, trained_on) == ("sft", study.modalities[-1]),
                        "accuracy": {g: round(a["correct"].count("1") / len(a["question_ids"]), 4)
                                     for g, a in answers.items()},
                        "answers": answers}
                path = cells_dir / family / trained_on / f"{method}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(cell))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    metrics, reports = root / "metrics", root / "reports"
    predictions = {"base": _predictions(0.1, 1), "sft": _predictions(0.5, 2), "grpo": _predictions(0.6, 3)}
    # the models trained on CT only (train.group): each one's accuracy on CT and on the other modalities
    summaries = {name: {**summarize(graded), **training_group_accuracy(graded, "CT")}
                 for name, graded in predictions.items()}
    evaluation = {"chance_accuracy": 0.2857, "split": "data/processed/test.jsonl",
                  "trained_on": {"group": "CT", "family": "modality"}}
    for name, summary in summaries.items():
        prefix = "" if name == "grpo" else f"{name}_"
        evaluation.update({f"{prefix}{key}": value for key, value in summary.items()})
        if name != "base":
            evaluation[f"{prefix}gain_over_base"] = gain_over_base(summary, summaries["base"])
    evaluation.update(paired_comparisons(predictions))
    study = repo_params().study
    write_cells(metrics / "study", study, predictions["base"])
    matrices = generalization(metrics / "study", study, evaluation, [p.__dict__ for p in predictions["base"]])
    (metrics / "eval.json").write_text(json.dumps(evaluation))
    (metrics / "generalization.json").write_text(json.dumps(matrices))
    history = [{"step": s, "reward": s / 10, "rewards/format_reward/mean": 1.0, "rewards/accuracy_reward/mean": s / 20,
                "completions/mean_length": 6.0} for s in range(1, 11)]
    write_training_curves(history, reports)
    built = build_report({"eval.json": evaluation, "generalization.json": matrices}, "think_after",
                         reports / "figures", reports / "train_curve.png")
    write_report(built, reports)
    return root


def test_every_number_in_the_report_equals_its_metric(report):
    checked = check_numbers(report / "reports", report / "metrics")
    assert checked > 50


def test_the_report_shows_grpo_and_sft_matrices_with_their_averages(report):
    """Both methods' cross-modality and cross-task matrices, every cell, and each one's in- and
    out-of-domain averages: the paper's GRPO-against-SFT comparison, read from generalization.json."""
    study = json.loads((report / "metrics/generalization.json").read_text())
    shown = {tuple(json.loads(cell["data-path"])) for cell in parse((report / "reports/index.html").read_text()).cells
             if cell.get("data-source") == "generalization.json"}
    for family in ("modality", "question_type"):
        groups = study[family]["groups"]
        for method in ("grpo", "sft"):
            assert {(family, method, "accuracy", a, b) for a in groups for b in groups} <= shown
            assert {(family, method, "in_domain_average"), (family, method, "cross_domain_average")} <= shown
    assert study["modality"]["sft"]["in_domain_average"] != study["modality"]["grpo"]["in_domain_average"]


def test_a_number_that_drifts_from_its_metric_is_caught(report, tmp_path):
    html = (report / "reports/index.html").read_text()
    cell = next(c for c in parse(html).cells if c.get("data-source"))
    tampered = tmp_path / "reports"
    tampered.mkdir()
    (tampered / "summary.md").write_text("")
    (tampered / "index.html").write_text(html.replace(f">{cell['text']}</td>",
                                                      f">{float(cell['text']) + 0.01:.4f}</td>", 1))
    with pytest.raises(AssertionError, match="report"):
        check_numbers(tampered, report / "metrics")


def test_the_report_holds_the_papers_comparisons(report):
    html = (report / "reports/index.html").read_text()
    text = unescape(html)
    for title in ("paper's comparison table", "Cross-modality generalization", "Cross-task generalization",
                  "Gain of GRPO over the base model", "GRPO training curves", "Answer letters"):
        assert title in text
    assert parse(html).images == 5  # modality x type, gain over base, two matrices, reward curves: all embedded
    assert "src='data:image/png;base64," in html and "src='figures/" not in html
    markdown = (report / "reports/summary.md").read_text()
    for figure in ("figures/modality_by_question_type.png", "figures/cross_modality.png", "figures/cross_task.png"):
        assert f"]({figure})" in markdown and (report / "reports" / figure).is_file()


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                    reason="chromium is not installed (`make test` installs it as root; where CI is set, "
                           "this test fails instead)")
def test_the_report_renders_in_headless_chromium_with_every_image_loaded(report, tmp_path):
    assert CHROMIUM, "chromium is missing where CI is set: `make browser` installs Debian's chromium package"
    dom, screenshot = render_in_chromium(report / "reports/index.html", tmp_path)
    images = parse((report / "reports/index.html").read_text()).images
    assert f'data-images="loaded {images}/{images}"' in dom
    with Image.open(screenshot) as shot:
        assert shot.size == (1280, 2400)
        colors = shot.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colors) > 500  # heatmaps and curves drawn, not a blank or text-only page
    purple = sum(count for count, (r, g, b) in colors if r < 90 and g < 60 and b > 70)
    assert purple > 1000  # viridis' low end: the heatmap of the first screen is there


def _shown(report) -> set[tuple]:
    return {(cell.get("data-source"), *json.loads(cell["data-path"]))
            for cell in parse((report / "reports/index.html").read_text()).cells if cell.get("data-source")}


def test_the_report_states_both_budgets_of_every_cell(report):
    """The questions each cell's GRPO and SFT models trained on, read from generalization.json."""
    study = json.loads((report / "metrics/generalization.json").read_text())
    shown = _shown(report)
    for family in ("modality", "question_type"):
        for trained_on in study[family]["groups"]:
            for method in ("grpo", "sft"):
                assert {("generalization.json", family, "budget", trained_on, method, key)
                        for key in ("questions", "steps", "questions_per_step")} <= shown


def test_the_report_names_the_study_models_whose_outputs_the_protocol_could_not_read(report):
    study = json.loads((report / "metrics/generalization.json").read_text())
    flagged = f"sft trained on {repo_params().study.modalities[-1]}"
    assert study["modality"]["mostly_unreadable"] == [flagged]
    assert study["question_type"]["mostly_unreadable"] == []
    text = unescape((report / "reports/index.html").read_text())
    assert f"modality: {flagged}: their accuracies measure the format" in text


def test_the_report_says_which_group_the_models_trained_on(report):
    text = unescape((report / "reports/index.html").read_text())
    assert "Trained on: CT's train questions only (train.group)" in text
    assert "Inside and outside the training group (modality CT)" in text
    assert {("eval.json", f"{prefix}{key}") for prefix in ("", "sft_", "base_")
            for key in ("in_group_accuracy", "other_groups_accuracy")} <= _shown(report)


def test_a_study_of_one_family_reports_that_family_only(report, tmp_path):
    """The paper's cross-modality study lists no question type: no cross-task matrix, no cells asked for."""
    study = repo_params().study.model_copy(update={"question_types": []})
    base = _predictions(0.1, 1)
    write_cells(tmp_path / "study", study, base)
    evaluation = json.loads((report / "metrics/eval.json").read_text())
    matrices = generalization(tmp_path / "study", study, evaluation, [p.__dict__ for p in base])
    assert "question_type" in json.loads((report / "metrics/generalization.json").read_text())
    assert "question_type" not in matrices and matrices["modality"]["groups"] == study.modalities
    built = build_report({"eval.json": evaluation, "generalization.json": matrices}, "think_after",
                         tmp_path / "figures", None)
    titles = [section.title for section in built.sections]
    assert "Cross-modality generalization (accuracy)" in titles
    assert not [title for title in titles if "Cross-task" in title]


def test_unknown_comes_last_with_a_note_and_out_of_the_average():
    metrics = Metrics({"eval.json": {"accuracy": 0.5, "modality_average": 0.55,
                                     "per_modality": {"unknown": 0.2, "MRI": 0.6, "CT": 0.5}}})
    table = per_group(metrics, "per_modality", MODALITIES, "Accuracy per modality", "modality_average")
    assert table.header == ["model", "CT", "MRI", "unknown", "average"]
    assert "unknown: test questions whose modality Med-R1's split files do not give" in table.note
    assert "not in the average" in table.note
    assert per_group(Metrics({"eval.json": {"accuracy": 0.5, "per_modality": {"CT": 0.5}}}), "per_modality",
                     MODALITIES, "Accuracy per modality", None).note == ""


def test_the_report_shows_an_interval_for_every_gain_and_for_grpo_against_sft(report):
    """Every gain over the base (headline, per modality, per question type, each study cell) and GRPO against SFT
    in- and cross-domain, each with its paired interval, each number equal to metrics/*.json."""
    assert check_numbers(report / "reports", report / "metrics") > 50
    assert check_intervals(report / "reports", report / "metrics") > 200
    study = json.loads((report / "metrics/generalization.json").read_text())
    rows = {row[0]: row[1:] for row in parse((report / "reports/index.html").read_text()).rows if row}
    verdicts = {"GRPO better": "supported", "SFT better": "contradicted", "undecided": "undecided"}
    for family, others in (("modality", "modalities"), ("question_type", "question types")):
        result = study[family]["grpo_vs_sft"]["cross_domain"]
        difference, questions, verdict = rows[f"GRPO generalizes better than SFT to other {others} "
                                                        "(cross-domain average)"]
        assert verdict == verdicts[result["verdict"]]  # the interval's verdict, not the point estimate's sign
        assert difference.startswith(f"{'+' if result['difference'] > 0 else ''}{result['difference']} [")
        assert int(questions) == result["questions"] == sum(study[family]["questions"].values())
    assert "What this run can tell apart" in unescape((report / "reports/index.html").read_text())


def _cell_predictions(cell: dict, tested_on: str, base: dict[str, Prediction]) -> list[dict]:
    """A study cell's answers to one group's questions as predictions (the base's record fields, the cell's
    correctness)."""
    answers = cell["answers"][tested_on]
    return [{**base[question].__dict__, "correct": flag == "1"}
            for question, flag in zip(answers["question_ids"], answers["correct"])]


def test_study_gains_are_the_paired_comparisons_of_each_cell_with_the_base_on_its_questions(report):
    """Hand-made predictions: each cell's gain and interval in generalization.json equal compare_predictions and
    paired_difference on the cell's answers and the base's to the same questions; GRPO against SFT is the
    difference of the averages, its interval the paired bootstrap of each question's mean difference."""
    study = json.loads((report / "metrics/generalization.json").read_text())
    base = {p.question_id: p for p in _predictions(0.1, 1)}
    for family in ("modality", "question_type"):
        groups = study[family]["groups"]
        cells = {(a, method): json.loads((report / f"metrics/study/{family}/{a}/{method}.json").read_text())
                 for a in groups for method in ("grpo", "sft")}
        for (a, method), cell in cells.items():
            for b in groups:
                stored = study[family][method]["paired_gain_over_base"][a][b]
                predictions = _cell_predictions(cell, b, base)
                same = [base[p["question_id"]].__dict__ for p in predictions]
                assert stored == compare_predictions(predictions, same)["overall"]
                ordered = sorted(zip(predictions, same), key=lambda pair: pair[0]["question_id"])  # as paired.py pairs
                assert stored == paired_difference([p["correct"] for p, _ in ordered],
                                                   [p["correct"] for _, p in ordered]).as_dict()
                assert stored["n"] == study[family]["questions"][b] == len([p for p in base.values()
                                                                            if getattr(p, family) == b])
        per_question = {}
        for b in groups:  # the test fixture's groups are of one size: every question weighs alike
            right = {method: np.mean([[f == "1" for f in cells[(a, method)]["answers"][b]["correct"]]
                                      for a in groups if a != b], 0) for method in ("grpo", "sft")}
            per_question.update(zip(cells[(b, "grpo")]["answers"][b]["question_ids"], right["grpo"] - right["sft"]))
        cross = study[family]["grpo_vs_sft"]["cross_domain"]
        averages = {method: study[family][method]["cross_domain_average"] for method in ("grpo", "sft")}
        assert (cross["grpo_average"], cross["sft_average"]) == (averages["grpo"], averages["sft"])
        assert cross["difference"] == round(averages["grpo"] - averages["sft"], 4)
        assert tuple(cross["interval"]) == bootstrap_mean_interval([per_question[q] for q in sorted(per_question)])
        assert cross["cells"] == len(groups) * (len(groups) - 1)


def test_a_study_cell_without_its_answers_is_refused(report, tmp_path):
    study = repo_params().study
    base = _predictions(0.1, 1)
    write_cells(tmp_path / "study", study, base)
    evaluation = json.loads((report / "metrics/eval.json").read_text())
    old = tmp_path / "study/modality" / study.modalities[0] / "grpo.json"
    cell = json.loads(old.read_text())
    del cell["answers"]  # a cell of the format before the answers were kept
    old.write_text(json.dumps(cell))
    with pytest.raises(PipelineError, match="from another version of the study.*run `dvc repro`"):
        generalization(tmp_path / "study", study, evaluation, [p.__dict__ for p in base])


def test_a_study_question_the_base_model_did_not_answer_is_named(report, tmp_path):
    study = repo_params().study
    base = _predictions(0.1, 1)
    write_cells(tmp_path / "study", study, base)
    evaluation = json.loads((report / "metrics/eval.json").read_text())
    missing = next(p for p in base if p.modality == study.modalities[1])
    with pytest.raises(PipelineError, match=f"no answer to 1 of the modality {study.modalities[1]} test questions.*"
                                            f"{missing.question_id}"):
        generalization(tmp_path / "study", study, evaluation, [p.__dict__ for p in base if p is not missing])
