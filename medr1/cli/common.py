"""What the commands share: the console, the common options, the configured store, tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medr1.config import Params, load_params
from medr1.errors import MissingFileError

console = Console()

PARAMS_FILE = Path("params.yaml")

StoreOption = Annotated[str | None, typer.Option(
    "--store", help="Store URL (file://<folder> or s3://<bucket>/<prefix>); default: register.store in params.yaml.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of a table.")]


def checkout_params(what: str) -> Params:
    """params.yaml of the checkout the command runs in; `what` names the setting the caller needs."""
    if not PARAMS_FILE.is_file():
        raise MissingFileError(f"no params.yaml here for {what}: run in the pipeline's checkout, or give the option")
    return load_params(PARAMS_FILE)


def open_configured_store(url: str | None):
    """The store `url` names, else register.store of params.yaml."""
    from medr1.registry.backends import open_store

    if url is None:
        url = checkout_params("register.store (--store)").register_.store
    return open_store(url, base=Path.cwd())


def show(data, as_json: bool, title: str, columns: tuple[str, ...], rows: list[list[str]]) -> None:
    """`data` as JSON for machines, else `rows` as a table for people."""
    if as_json:
        print(json.dumps(data, indent=1))
        return
    table = Table(title=title)
    for index, column in enumerate(columns):
        if column == "version":  # an id to copy: never cut or wrapped, other columns give way in a narrow terminal
            table.add_column(column, no_wrap=True, min_width=max((len(row[index]) for row in rows), default=7))
        else:
            table.add_column(column)
    for row in rows:  # cells are text, never rich markup: "[vs 1a2b: +0.05 ...]" would vanish as a tag
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)
