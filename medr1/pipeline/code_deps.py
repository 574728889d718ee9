"""The code each DVC stage runs, two ways: what dvc.yaml declares, and what the imports reach.

dvc.yaml names a stage's code as folders of medr1/ (a room, e.g. medr1/evaluate) and files, so
that an edit anywhere in them reruns the stage. `imported_files` walks a module's imports inside
the repository (stages, flows, medr1), without importing anything; tests/test_architecture.py
checks that dvc.yaml's deps cover every file a stage's module reaches. The resume fingerprint of
a training run hashes `stage_code_files`, the same list DVC hashes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

CODE_ROOTS = ("medr1", "stages", "flows")


def stage_deps(stage: str, root: Path = Path(".")) -> list[str]:
    """The deps of `stage` (a plain or a foreach stage's name) as dvc.yaml writes them."""
    stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages") or {}
    if stage not in stages:
        raise KeyError(f"dvc.yaml has no stage {stage!r}")
    definition = stages[stage]
    return list((definition.get("do") or definition).get("deps") or [])


def stage_code_files(stage: str, root: Path = Path(".")) -> list[Path]:
    """Every Python file under the code deps of `stage` (relative to `root`), sorted."""
    files: set[Path] = set()
    for dep in stage_deps(stage, root):
        if dep.split("/")[0] not in CODE_ROOTS:
            continue
        path = root / dep
        found = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        files.update(file.relative_to(root) for file in found)
    return sorted(files)


def module_file(module: str, root: Path = Path(".")) -> Path | None:
    """The file that defines `module` under `root` (a package's __init__.py), if any."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(file: Path, module: str) -> set[str]:
    """The repository modules that `file` (module `module`) imports, at any depth of its code."""
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from medr1.x import module`
    return {name for name in found if name.split(".")[0] in CODE_ROOTS}


def imported_files(module: str, root: Path = Path(".")) -> dict[Path, str]:
    """Every repository file that `module` reaches through its imports, itself included, each with
    the module that first imported it. The packages on the way count too (Python runs their
    __init__.py), unless the __init__.py holds no code, only a docstring."""
    start = module_file(module, root)
    if start is None:
        raise KeyError(f"no module {module} under {root}")
    reached: dict[Path, str] = {start.relative_to(root): module}
    pending = [(module, start)]
    while pending:
        name, file = pending.pop()
        for imported in sorted(imported_modules(file, name)):
            parts = imported.split(".")
            for depth in range(1, len(parts) + 1):  # a.b.c runs a/__init__.py and a/b/__init__.py first
                prefix = ".".join(parts[:depth])
                found = module_file(prefix, root)
                if found is not None and found.relative_to(root) not in reached:
                    reached[found.relative_to(root)] = name
                    pending.append((prefix, found))
    return {file: by for file, by in reached.items() if not _docstring_only(root / file)}


def _docstring_only(file: Path) -> bool:
    body = ast.parse(file.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def import_graph(package: str, root: Path = Path(".")) -> dict[str, set[str]]:
    """{module: the modules of `package` it imports directly} for every module of `package`."""
    graph: dict[str, set[str]] = {}
    for file in sorted((root / package).rglob("*.py")):
        relative = file.relative_to(root).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        name = ".".join(parts)
        graph[name] = set()
        for imported in imported_modules(file, name):
            while imported and module_file(imported, root) is None:  # `from pkg.mod import function`
                imported = imported.rpartition(".")[0]
            if imported and imported != name and imported.split(".")[0] == package:
                graph[name].add(imported)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if state.get(target) is None and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (cycle := visit(node)):
            return cycle
    return None
