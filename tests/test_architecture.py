"""The rooms hold: dvc.yaml's code deps cover every module each stage runs, medr1 has no import
cycle and imports neither stages nor flows, and the real-model path never imports the tiny demo."""

from pathlib import Path

import pytest
import yaml
from conftest import REPO

from medr1.pipeline.code_deps import (
    find_cycle,
    import_graph,
    imported_files,
    imported_modules,
    stage_code_files,
    stage_deps,
)

STAGE_MODULES = {  # dvc.yaml stage -> the module its cmd runs
    name: (definition.get("do") or definition)["cmd"].split(" -m ")[1].split()[0]
    for name, definition in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()
}


def uncovered(stage: str, root: Path) -> list[str]:
    """The files `stage`'s module reaches that no code dep of the stage covers, with who imports them."""
    deps = [dep.rstrip("/") for dep in stage_deps(stage, root)]
    reached = imported_files(STAGE_MODULES[stage], root)
    return [f"{file} (imported by {by})" for file, by in sorted(reached.items())
            if not any(str(file) == dep or str(file).startswith(dep + "/") for dep in deps)]


@pytest.mark.parametrize("stage", sorted(STAGE_MODULES))
def test_dvc_yaml_code_deps_cover_every_module_the_stage_imports(stage):
    missing = uncovered(stage, REPO)
    assert not missing, f"dvc.yaml stage {stage} lacks deps for: {', '.join(missing)}"


def test_a_removed_dep_is_found(tmp_path):
    """The check fails, naming the module and the stage, when a dep is taken out of dvc.yaml."""
    for folder in ("medr1", "stages"):
        for file in (REPO / folder).rglob("*.py"):
            target = tmp_path / file.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(file.read_text())
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    pipeline["stages"]["evaluate"]["deps"].remove("medr1/evaluate")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    missing = uncovered("evaluate", tmp_path)
    assert any(item.startswith("medr1/evaluate/greedy.py (imported by medr1.evaluate.decoding)") for item in missing)
    assert uncovered("train", tmp_path) == []


def test_the_resume_fingerprint_hashes_the_stage_code_dvc_hashes():
    files = {str(path) for path in stage_code_files("train", REPO)}
    assert {"stages/train.py", "medr1/train/grpo.py", "medr1/tiny/training.py"} <= files
    assert "medr1/evaluate/greedy.py" not in files  # evaluation code does not invalidate a training run
    assert {str(file) for file in imported_files("stages.train", REPO)} <= files


def test_no_import_cycle_inside_medr1():
    graph = import_graph("medr1", REPO)
    assert len(graph) > 40
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _imports(file: Path) -> set[str]:
    relative = file.relative_to(REPO).with_suffix("")
    module = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
    return imported_modules(file, module)


def test_medr1_imports_neither_stages_nor_flows():
    offenders = [f"{file.relative_to(REPO)} imports {name}" for file in (REPO / "medr1").rglob("*.py")
                 for name in _imports(file) if name.split(".")[0] in ("stages", "flows")]
    assert offenders == []


def test_only_the_demo_imports_the_tiny_model():
    """The real-model path reaches medr1/tiny only through the training hook a model's config names."""
    demo = ("medr1/tiny/", "medr1/synthetic/")
    offenders = [f"{file.relative_to(REPO)} imports {name}" for file in (REPO / "medr1").rglob("*.py")
                 if not str(file.relative_to(REPO)).startswith(demo)
                 for name in _imports(file) if name.startswith("medr1.tiny")]
    assert offenders == []
