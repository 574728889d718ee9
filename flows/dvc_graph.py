"""The pipeline graph as DVC reads it from dvc.yaml: the flows take the stage order from here and
never write the graph down a second time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medr1.errors import PipelineError


@dataclass(frozen=True)
class PipelineGraph:
    order: tuple[str, ...]                   # every stage, upstream first; ties in dvc.yaml's order
    upstream: dict[str, frozenset[str]]      # stage -> every stage it depends on, directly or not
    deps: dict[str, tuple[str, ...]]         # stage -> the paths it reads, as dvc.yaml names them (interpolated)
    outs: dict[str, tuple[tuple[str, bool], ...]]  # stage -> (path, cached in DVC's cache) it writes

    @property
    def dependencies(self) -> frozenset[str]:
        """Every path a stage reads."""
        return frozenset(path for paths in self.deps.values() for path in paths)

    def before(self, stage: str) -> tuple[str, ...]:
        """The stages `stage` depends on, in run order."""
        return tuple(name for name in self.order if name in self.upstream[self.require(stage)])

    def output(self, path: str) -> tuple[str, str, bool] | None:
        """(stage, output, cached) of the stage output that `path` is or lies in; None for a source file."""
        for stage, outs in self.outs.items():
            for out, cached in outs:
                if path == out or path.startswith(out.rstrip("/") + "/"):
                    return stage, out, cached
        return None

    def inputs(self, stage: str) -> list[tuple[str, bool]]:
        """(path, cached) of the deps of `stage` that other stages write."""
        return [(path, found[2]) for path in self.deps[self.require(stage)] if (found := self.output(path))]

    def require(self, stage: str) -> str:
        if stage not in self.upstream:
            raise PipelineError(f"dvc.yaml has no stage {stage!r} (stages: {', '.join(self.order)})")
        return stage


def read_graph(root: Path) -> PipelineGraph:
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            graph = repo.index.graph  # edges point from a stage to the stages it depends on
            stages = [stage for stage in graph.nodes if stage.cmd]  # pipeline stages, not `dvc add` files
            position = {stage: index for index, stage in enumerate(stages)}
            runnable = graph.subgraph(stages).reverse(copy=True)
            order = nx.lexicographical_topological_sort(runnable, key=position.__getitem__)
            name = {stage: _target(stage, root) for stage in stages}
            return PipelineGraph(
                order=tuple(name[stage] for stage in order),
                upstream={name[stage]: frozenset(name[s] for s in nx.ancestors(runnable, stage)) for stage in stages},
                deps={name[stage]: tuple(dep.def_path for dep in stage.deps) for stage in stages},
                outs={name[stage]: tuple((out.def_path, bool(out.use_cache)) for out in stage.outs)
                      for stage in stages},
            )
    except DvcException as error:
        raise PipelineError(f"cannot read the pipeline in {root}: {error}") from error


def _target(stage, root: Path) -> str:
    """How `dvc repro` run in `root` names the stage: `train`, or `sub/dvc.yaml:train` in a nested dvc.yaml."""
    dvcfile = Path(stage.dvcfile.path).resolve().relative_to(root.resolve())
    return stage.name if dvcfile == Path("dvc.yaml") else f"{dvcfile.as_posix()}:{stage.name}"
