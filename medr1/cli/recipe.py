"""`medr1 recipe`: list, show and apply the recipes in recipes/ (named sets of params)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from medr1.cli.common import PARAMS_FILE, console
from medr1.pipeline.recipes import RECIPES, apply_recipe, read_recipe, recipe_names, settings

app = typer.Typer(no_args_is_help=True, help="Recipes: named sets of params, e.g. Med-R1's published runs "
                                             "(recipes/med-r1/...) and the embedded CPU default.")


@app.command("list")
def list_recipes() -> None:
    """The recipes in recipes/, each with its description."""
    table = Table("recipe", "description")
    for name in recipe_names(RECIPES):
        table.add_row(name, str(read_recipe(name).get("description", "")).strip())
    console.print(table)


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="A recipe, e.g. med-r1/qwen2-vl-2b-think.")]) -> None:
    """Every param the recipe sets (with `extends`, its base's too, this recipe's winning)."""
    recipe = read_recipe(name)
    console.print(str(recipe.get("description", "")).strip())
    if "extends" in recipe:
        console.print(f"extends {recipe['extends']}; the settings of both:")
    for key, value in settings(recipe["params"]).items():
        console.print(f"  {key}: {yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...')}")


@app.command("apply")
def apply(
    name: Annotated[str, typer.Argument(help="A recipe, e.g. med-r1/qwen2-vl-2b-think.")],
    params: Annotated[Path, typer.Option("--params", help="The params file to write.")] = PARAMS_FILE,
) -> None:
    """Write the recipe's params into params.yaml (comments kept), after checking the result.

    A params.yaml of an earlier version's layout is migrated first: each moved key is named.

    Then `dvc repro` runs it and dvc.lock records it; `git diff params.yaml` shows what changed.
    For an experiment instead: `dvc exp run` after applying, or apply in a `dvc exp` branch.
    """
    if not params.is_file():
        raise typer.BadParameter(f"{params} not found: run in the pipeline's checkout or pass --params",
                                 param_hint="--params")
    from medr1.train.trl_config import check_trl_settings  # imports TRL: the check the stages will make

    applied = apply_recipe(name, params, check=check_trl_settings)
    if applied.moved:
        console.print(f"{params} was written by an earlier version: {len(applied.moved)} key(s) moved")
        for line in applied.moved:
            console.print(f"  {line}")
    console.print(f"[bold]{name}[/bold] applied to {params}: {len(applied.changed)} setting(s) changed")
    for key, (old, new) in applied.changed.items():
        console.print(f"  {key}: {old!r} -> {new!r}")
