"""`medr1`: the command line. Each command group lives in its own module; this one puts them
together and gives every command the same error path: an expected failure (`PipelineError`)
prints one red line and exits 1, anything else keeps its traceback."""

from __future__ import annotations

import typer
from rich.markup import escape
from typer.core import TyperGroup

from medr1.cli import audit, check, evaluate, plan, recipe, registry, remote, score
from medr1.cli.common import console
from medr1.errors import PipelineError


class PipelineErrorsToMessages(TyperGroup):
    """The root command group: every subcommand runs inside its `invoke`, so this is the one place
    where an expected failure becomes a message and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PipelineError as error:
            console.print(f"[red]error:[/red] {escape(str(error))}")
            raise typer.Exit(1) from None


app = typer.Typer(cls=PipelineErrorsToMessages, no_args_is_help=True,
                  help="Med-R1 pipeline: data checks, training plans, evaluation, scoring, model registry and lineage "
                       "audit.")
app.add_typer(registry.app, name="registry")
app.add_typer(audit.app, name="audit")
app.add_typer(recipe.app, name="recipe")
app.command("check")(check.check)
app.command("evaluate")(evaluate.evaluate)
app.command("dvc-remote")(remote.dvc_remote)
app.command("score")(score.score_command)
app.command("plan")(plan.plan)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
