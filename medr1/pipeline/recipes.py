"""Recipes: named sets of params (recipes/<name>.yaml, open-r1 style) that `medr1 recipe apply`
writes into params.yaml, so that dvc.lock records exactly what ran.

A recipe file holds a `description` and a `params` mapping shaped like params.yaml; applying it
sets each of its keys in params.yaml (comments and order kept) and validates the result before
anything is written. A params.yaml written by an earlier version is migrated first (the keys that
moved, medr1/params_migration.py), each moved key named.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from medr1.config import Params, ParamsError, read_params_yaml
from medr1.errors import MissingFileError
from medr1.params_migration import migrate

RECIPES = Path("recipes")


class RecipeError(ParamsError):
    """A recipe file is malformed or would make params.yaml invalid; the message names the key."""


def recipe_names(root: Path = RECIPES) -> list[str]:
    return sorted(str(path.relative_to(root).with_suffix("")) for path in root.rglob("*.yaml"))


def read_recipe(name: str, root: Path = RECIPES) -> dict:
    """The recipe's description and params, its base's params under its own when it `extends` one."""
    return _resolved(name, root, ())


def _recipe_file(name: str, root: Path) -> dict:
    path = root / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(recipe_names(root)) or "none"
        raise MissingFileError(f"no recipe {name!r} ({path}); recipes here: {known}")
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RecipeError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(recipe, dict) or not isinstance(recipe.get("params"), dict):
        raise RecipeError(f"{path} needs a `params:` mapping shaped like params.yaml")
    return recipe


def _resolved(name: str, root: Path, chain: tuple[str, ...]) -> dict:
    """`extends: <recipe>`: the base's settings, then this recipe's over them (a list or a pass-through
    mapping such as train.trl is replaced whole, as applying the two one after the other would)."""
    if name in chain:
        raise RecipeError(f"recipes extend each other in a cycle: {' -> '.join((*chain, name))}")
    recipe = _recipe_file(name, root)
    base = recipe.get("extends")
    if base is None:
        return recipe
    if not isinstance(base, str):
        raise RecipeError(f"{root / name}.yaml: extends must name one recipe, e.g. extends: med-r1/qwen2-vl-2b-think")
    try:
        parent = _resolved(base, root, (*chain, name))
    except MissingFileError as missing:
        raise RecipeError(f"recipe {name} extends {base!r}, which is not there: {missing}") from missing
    merged = {**settings(parent["params"]), **settings(recipe["params"])}
    return {**recipe, "params": _tree(merged)}


def _tree(flat: dict[str, object]) -> dict:
    """Dotted keys back into a nested params mapping (settings' inverse)."""
    tree: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


# pass-through mappings: a recipe sets them whole, so none of another recipe's keys stay
WHOLE = {"train.trl", "sft.trl"}


def settings(tree: dict, prefix: str = "") -> dict[str, object]:
    """Leaf keys of a params tree as dotted paths: {"train.group": "CT", "train.trl": {...}, ...}."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in WHOLE:
            flat.update(settings(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _yaml_value(value):
    """A value as ruamel writes it readably: lists in flow style like params.yaml's own."""
    from ruamel.yaml.comments import CommentedSeq

    if isinstance(value, list):
        sequence = CommentedSeq(value)
        sequence.fa.set_flow_style()
        return sequence
    return value


def _set(document, path: str, value, note: str) -> None:
    """Set one dotted key; its old end-of-line comment (which described the old value) gives way to `note`."""
    *parents, leaf = path.split(".")
    node = document
    for part in parents:
        if part not in node or not isinstance(node[part], dict):
            node[part] = {}
        node = node[part]
    node[leaf] = _yaml_value(value)
    node.ca.items.pop(leaf, None)
    node.yaml_add_eol_comment(note, leaf, column=31)


def _reads_back(text: str) -> bool:
    try:
        return yaml.safe_load(text) == text
    except yaml.YAMLError:
        return False


def _handler():
    from ruamel.yaml import YAML

    handler = YAML()  # round trip: params.yaml keeps its comments and key order
    handler.width = 4096

    def represent_float(representer, value: float):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:  # 1e-06 -> 1.0e-06: YAML 1.1 readers need the dot
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return representer.represent_scalar("tag:yaml.org,2002:float", text)

    def represent_str(representer, value: str):
        # DVC and PyYAML read YAML 1.1, where a plain `no` or `on` is a boolean: quote such strings
        plain = _reads_back(value)
        return representer.represent_scalar("tag:yaml.org,2002:str", value, style=None if plain else '"')

    handler.representer.add_representer(float, represent_float)
    handler.representer.add_representer(str, represent_str)
    handler.representer.add_representer(type(None), lambda representer, _: representer.represent_scalar(
        "tag:yaml.org,2002:null", "null"))
    return handler


@dataclass(frozen=True)
class Applied:
    """What applying a recipe did to a params file."""

    moved: list[str]  # keys of an earlier version's layout, each "old -> new" (medr1/params_migration.py)
    changed: dict[str, tuple[object, object]]  # {dotted key: (old value, new value)}, after the move


def apply_recipe(name: str, params_file: Path, root: Path = RECIPES,
                 check: Callable[[Params], None] | None = None) -> Applied:
    """Write recipe `name` into `params_file`, after moving the keys an earlier version wrote elsewhere.

    Every key of the recipe must be a key params.yaml's schema knows, and the result must validate, `check`
    included (`medr1 recipe apply`: train.trl and sft.trl against the installed TRL; a ParamsError naming the
    keys): otherwise nothing is written and the error names the keys.
    """
    recipe = read_recipe(name, root)
    handler = _handler()
    original = params_file.read_text()
    document = handler.load(original)
    earlier = read_params_yaml(original)
    try:
        moved = migrate(document)
        migrate(earlier)
    except ValueError as error:
        raise RecipeError(f"{params_file}: {error}; nothing was written") from error
    before = settings(earlier)
    for path, value in {"recipe": name, **settings(recipe["params"])}.items():
        if path not in before or before[path] != value:
            _set(document, path, value, f"recipe {name}")
    stream = io.StringIO()
    handler.dump(document, stream)
    text = stream.getvalue()
    try:
        result = Params.model_validate(read_params_yaml(text))
    except ValidationError as error:
        problems = [f"  {'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}" for issue in error.errors()]
        raise RecipeError(f"recipe {name} would make {params_file} invalid; nothing was written:\n"
                          + "\n".join(problems)) from error
    if check is not None:
        try:
            check(result)
        except ParamsError as error:
            raise RecipeError(f"recipe {name} would make {params_file} invalid; nothing was written:\n"
                              f"{error}") from error
    after = settings(read_params_yaml(text))
    with tempfile.NamedTemporaryFile("w", dir=params_file.parent, prefix=".params-", delete=False) as staged:
        staged.write(text)
    os.replace(staged.name, params_file)
    return Applied(moved, {key: (before.get(key), value) for key, value in after.items() if before.get(key) != value})


def recipe_changes(params: dict, name: str, root: Path = RECIPES) -> list[str] | None:
    """The params keys whose values differ from what recipe `name` sets (edited by hand, or by
    `dvc exp run -S`, after it was applied); None when the recipe file is not there."""
    try:
        wanted = settings(read_recipe(name, root)["params"])
    except MissingFileError:
        return None
    current = settings(params)
    return sorted(key for key, value in wanted.items() if current.get(key) != value)
