"""Med-R1's experiments as recipes: the main run on one group's train file (train.group), the paper's
cross-modality (8x8) and cross-task (5x5) studies as recipes that extend a main one, one epoch a cell,
GRPO and SFT cells as DVC stages of their own, and one budget for both methods of a cell."""

import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, copy_repository, run

from medr1.config import ParamsError, load_params
from medr1.data.records import MODALITIES, QUESTION_TYPES, Record, write_jsonl
from medr1.data.splits import train_split
from medr1.errors import PipelineError
from medr1.pipeline.recipes import RecipeError, apply_recipe, read_recipe, recipe_names
from medr1.study.cells import cell_budget, cell_records, cell_settings, sft_steps
from medr1.train.budget import questions_per_step
from medr1.train.launch_plan import launch_of
from medr1.train.trl_config import grpo_config, sft_config

RECIPES = REPO / "recipes"
MEDR1 = [sys.executable, "-m", "medr1.cli"]  # the checkout's own code (cwd), not the installed one
MAIN_RUNS = ["med-r1/qwen2-vl-2b-think", "med-r1/qwen2-vl-2b-no-think", "med-r1/qwen2.5-vl-3b-think",
             "med-r1/qwen2.5-vl-3b-no-think"]
STUDIES = {f"{run}-{study}": (run, study) for run in MAIN_RUNS for study in ("cross-modality", "cross-task")}
MED_R1 = [name for name in recipe_names(RECIPES) if name.startswith("med-r1/")]
PAPER_CELLS = {"cross-modality": ("modality", MODALITIES), "cross-task": ("question_type", QUESTION_TYPES)}


@pytest.fixture
def params_file(tmp_path) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path / "params.yaml"


def applied(name: str, params_file: Path):
    apply_recipe(name, params_file, RECIPES)
    return load_params(params_file)


def test_every_main_run_trains_on_ct_as_med_r1s_scripts_do(params_file):
    assert set(STUDIES) <= set(MED_R1)
    for name in [name for name in MED_R1 if name not in STUDIES]:
        assert applied(name, params_file).train.group == "CT", name
        line = next(line for line in (RECIPES / f"{name}.yaml").read_text().splitlines() if "group: CT" in line)
        assert re.search(r"(\.sh|README\.md):\d+ .*CT", line), f"{name}: the comment cites no script line: {line}"
    assert load_params(REPO / "params.yaml").train.group is None  # the embedded default pools every group


def test_a_train_group_is_a_modality_or_a_question_type(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["group"] = "Chest"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"train\.group: .*'Chest' is neither a modality .* nor a question type"):
        load_params(tmp_path / "params.yaml")
    assert train_split(Path("data/processed"), None) == Path("data/processed/train.jsonl")
    assert train_split(Path("d"), "Lesion Grading", check=False) == Path("d/splits/question_type/train/"
                                                                           "Lesion Grading.jsonl")
    with pytest.raises(PipelineError, match=r"no train questions for modality 'OCT' .*check train\.group"):
        train_split(tmp_path, "OCT")


# extends -----------------------------------------------------------------------------------------------------


def test_a_study_recipe_is_its_main_run_with_the_study_over_it(params_file):
    for study, (main, kind) in STUDIES.items():
        merged, base = read_recipe(study, RECIPES)["params"], read_recipe(main, RECIPES)["params"]
        family, groups = PAPER_CELLS[kind]
        assert merged["train"] == base["train"] and merged["sft"] == base["sft"], study  # train.trl: the base's
        assert merged["study"]["modalities" if family == "modality" else "question_types"] == list(groups)
        assert merged["study"]["question_types" if family == "modality" else "modalities"] == []
        assert merged["ingest"]["medr1_splits"]["family"] == family  # the cross-task files for the cross-task study


def test_extends_names_a_cycle_and_a_missing_base(tmp_path):
    recipes = tmp_path / "recipes"
    (recipes / "a").mkdir(parents=True)
    (recipes / "a/one.yaml").write_text("extends: a/two\nparams: {train: {group: CT}}\n")
    (recipes / "a/two.yaml").write_text("extends: a/one\nparams: {train: {group: MRI}}\n")
    (recipes / "lonely.yaml").write_text("extends: a/three\nparams: {train: {group: CT}}\n")
    with pytest.raises(RecipeError, match="in a cycle: a/one -> a/two -> a/one"):
        read_recipe("a/one", recipes)
    with pytest.raises(RecipeError, match="recipe lonely extends 'a/three', which is not there"):
        read_recipe("lonely", recipes)


def test_extends_replaces_a_pass_through_mapping_whole(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "base.yaml").write_text("params: {train: {group: CT, reasoning: no_think, "
                                       "trl: {top_k: 50, top_p: 1.0}}}\n")
    (recipes / "child.yaml").write_text("extends: base\nparams: {train: {group: MRI, trl: {top_k: 5}}}\n")
    assert read_recipe("child", recipes)["params"] == {"train": {"group": "MRI", "reasoning": "no_think",
                                                                 "trl": {"top_k": 5}}}


def test_recipe_show_prints_the_merged_settings():
    shown = run([*MEDR1, "recipe", "show", "med-r1/qwen2-vl-2b-think-cross-task"], REPO,
                env={"COLUMNS": "300"}).stdout
    assert "extends med-r1/qwen2-vl-2b-think" in shown
    assert "train.group: CT" in shown and "study.modalities: []" in shown and "train.trl: {" in shown
    assert "learning_rate" in shown


# the cells DVC runs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    return copy_repository(tmp_path_factory.mktemp("study-recipes"))


def dvc_cells(repo: Path) -> dict[str, dict]:
    """Each study stage DVC resolves from dvc.yaml and params.yaml: name -> the params it depends on, as read."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        return {stage.name: {key: value for dep in stage.deps if hasattr(dep, "read_params")
                             for key, value in dep.read_params().items()}
                for stage in dvc.index.stages if stage.name.startswith("study_")}


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_a_study_recipe_makes_exactly_the_papers_cells_one_epoch_each(name, repo_copy, tmp_path):
    family, groups = PAPER_CELLS[STUDIES[name][1]]
    params = applied(name, repo_copy / "params.yaml")
    cells = dvc_cells(repo_copy)
    assert sorted(cells) == sorted(f"study_{family}_{method}@{group}" for method in ("grpo", "sft") for group in groups)
    listed = "study.modalities" if family == "modality" else "study.question_types"
    for stage, values in cells.items():
        assert values[listed] == list(groups), stage  # each cell's model is tested on every group of its family
        assert (values["study.max_steps"], values["study.num_train_epochs"]) == (-1, 1), stage
    grpo = grpo_config(cell_settings(params, "grpo").model_copy(update={"device": "cpu"}), tmp_path / "g")
    sft = sft_config(cell_settings(params, "sft"), "cpu", tmp_path / "s")
    assert (grpo.max_steps, grpo.num_train_epochs) == (-1, 1)  # one epoch over the group's questions, both
    assert (sft.max_steps, sft.num_train_epochs) == (-1, 1)


def placeholder_inputs(repo: Path) -> None:
    """Empty stand-ins for every input a stage reads that is not there (the data, and the outputs of the stages
    before it): `dvc repro --dry` checks that each stage's deps exist, and runs nothing."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        missing = {Path(dep.fs_path) for stage in dvc.index.stages for dep in stage.deps
                   if not Path(dep.fs_path).exists() and repo.resolve() in Path(dep.fs_path).parents}
    for path in sorted(missing):
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize("name", ["med-r1/qwen2-vl-2b-think-cross-modality", "med-r1/qwen2-vl-2b-think-cross-task"])
def test_dvc_repro_dry_after_applying_a_study_recipe_lists_the_papers_cells(name, repo_copy):
    family, groups = PAPER_CELLS[STUDIES[name][1]]
    apply_recipe(name, repo_copy / "params.yaml", RECIPES)  # the CLI command: tests/test_recipes.py
    placeholder_inputs(repo_copy)
    dry = run(["dvc", "repro", "--dry"], repo_copy).stdout
    ran = re.findall(r"Running stage '([^']+)'", dry)
    for method in ("grpo", "sft"):
        assert [stage for stage in ran if stage.startswith(f"study_{family}_{method}@")] == \
            [f"study_{family}_{method}@{group}" for group in groups]
    assert not [stage for stage in ran if stage.startswith("study_") and not stage.startswith(f"study_{family}_")]
    assert {"train", "sft", "evaluate", "report"} <= set(ran)


# budgets -----------------------------------------------------------------------------------------------------


def test_the_embedded_default_cells_train_as_before(params_file):
    params = load_params(params_file)
    assert sft_steps(params) == 80  # 40 GRPO steps x 128 completions / 8 generations = 640 questions, 8 a step
    grpo, sft = cell_budget(params, "grpo", 500), cell_budget(params, "sft", 500)
    assert (grpo.steps, grpo.questions, grpo.epochs) == (40, 640, None)
    assert (sft.steps, sft.questions) == (80, 640)
    assert cell_settings(params, "grpo").trl["max_steps"] == 40 and cell_settings(params, "sft").trl["max_steps"] == 80


def test_questions_per_step_counts_accumulation_and_processes(params_file):
    params = applied("med-r1/qwen2-vl-2b-think", params_file)
    processes = launch_of(params.train.launcher, REPO).processes
    assert processes == 2  # torchrun --nproc_per_node 2
    assert questions_per_step(params.train, processes) == 8  # 2 prompts x 2 GPUs x 2 accumulation
    assert questions_per_step(params.sft, processes) == 128  # 4 x 16 accumulation x 2 GPUs
    # a study cell is one process accumulating the launcher's micro-batches: its optimizer step sees what a step
    # of the two-GPU run sees
    assert cell_settings(params, "grpo").trl["gradient_accumulation_steps"] == 4
    assert cell_settings(params, "sft").trl["gradient_accumulation_steps"] == 32
    assert cell_budget(params, "grpo", 1000).questions_per_step == 8
    assert cell_budget(params, "sft", 1000).questions_per_step == 128
    # by steps, SFT is given the GRPO cell's questions, not 16 times as many
    by_steps = params.model_copy(update={"study": params.study.model_copy(update={"max_steps": 16})})
    assert cell_budget(by_steps, "grpo", 1000).questions == 16 * 8 == 128
    assert (cell_budget(by_steps, "sft", 1000).steps, cell_budget(by_steps, "sft", 1000).questions) == (1, 128)


def group_file(data: Path, count: int) -> None:
    records = [Record(question_id=f"q{i}", dataset="d", modality="CT", question_type="Modality Recognition",
                      question="Which?", options={"A": "CT", "B": "MRI"}, answer="A", image=f"images/{i}.png",
                      image_sha256=f"{i:064x}") for i in range(count)]
    for family, group in (("modality", "CT"), ("question_type", "Modality Recognition")):
        write_jsonl(records, data / "splits" / family / "train" / f"{group}.jsonl")


@pytest.mark.parametrize("name", MED_R1)
def test_under_a_med_r1_recipe_a_cells_grpo_and_sft_budgets_are_equal(name, params_file, tmp_path):
    params = applied(name, params_file)
    for count in (3241, 1000, 9):
        group_file(tmp_path / f"data{count}", count)
        records = cell_records(params, "modality", "CT", tmp_path / f"data{count}")
        grpo, sft = cell_budget(params, "grpo", len(records)), cell_budget(params, "sft", len(records))
        assert grpo.questions == sft.questions == len(records), (name, count, grpo, sft)
        assert count - len(records) < grpo.questions_per_step  # only a last, partial generation batch left out
        assert grpo.epochs == sft.epochs == 1


def test_a_group_smaller_than_a_generation_batch_is_refused(params_file, tmp_path):
    params = applied("med-r1/qwen2-vl-2b-think-cross-modality", params_file)
    group_file(tmp_path, 3)
    with pytest.raises(PipelineError, match=r"modality 'CT' has 3 train questions, fewer than one GRPO generation "
                                            r"batch of 8"):
        cell_records(params, "modality", "CT", tmp_path)


def test_the_metrics_tell_the_training_group_from_the_others():
    from medr1.evaluate.metrics import Prediction, training_group_accuracy

    def graded(modality: str, kind: str, correct: bool) -> Prediction:
        return Prediction("q", "d", modality, kind, "A", "A" if correct else "B", "", True, correct, True)

    predictions = [graded("CT", "Modality Recognition", True), graded("CT", "Disease Diagnosis", True),
                   graded("MRI", "Modality Recognition", False), graded("OCT", "Disease Diagnosis", True)]
    assert training_group_accuracy(predictions, "CT") == {"in_group_accuracy": 1.0, "in_group_count": 2,
                                                          "other_groups_accuracy": 0.5, "other_groups_count": 2}
    assert training_group_accuracy(predictions, "Modality Recognition")["in_group_accuracy"] == 0.5
