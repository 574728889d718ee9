"""What a report holds: tables of `Sourced` numbers, figures, facts; and `Metrics`, the one way
to take a number out of the metrics files (so the report cannot drift from metrics/*.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medr1.errors import PipelineError


@dataclass(frozen=True)
class Sourced:
    value: float | int
    source: str
    path: tuple[str, ...]

    def text(self) -> str:
        return str(self.value)


def signed(number: Sourced) -> str:
    """A difference as stored, with its sign: "+0.12", "-0.05", "0.0"."""
    return ("+" if number.value > 0 else "") + number.text()


@dataclass(frozen=True)
class Interval:
    """A difference with its 95% interval, three Sourced numbers shown in one cell: "+0.12 [+0.03, +0.21]"."""

    value: Sourced
    low: Sourced
    high: Sourced

    def parts(self) -> tuple[Sourced, Sourced, Sourced]:
        return (self.value, self.low, self.high)

    def text(self) -> str:
        return f"{signed(self.value)} [{signed(self.low)}, {signed(self.high)}]"

    def verdict(self) -> str:
        """'above 0', 'below 0' or 'holds 0': what the interval, never the point estimate, says."""
        return "above 0" if self.low.value > 0 else "below 0" if self.high.value < 0 else "holds 0"


Cell = str | Sourced | Interval


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Cell]]
    note: str = ""


@dataclass
class Figure:
    title: str
    path: Path
    note: str = ""


@dataclass
class Report:
    title: str
    facts: list[str]
    sections: list[Table | Figure] = field(default_factory=list)


class Metrics:
    """The metrics files by name, and the one way to take a number out of them."""

    def __init__(self, files: dict[str, dict]):
        self.files = files

    def _find(self, source: str, path: tuple[str, ...]):
        value = self.files.get(source)
        for key in path:
            if isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            elif isinstance(value, dict) and key in value:
                value = value[key]
            else:
                raise PipelineError(f"metrics/{source} has no {'.'.join(path)}: rerun the stage that writes it")
        return value

    def __call__(self, source: str, *path: str) -> Sourced:
        value = self._find(source, path)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PipelineError(f"metrics/{source} {'.'.join(path)} is not a number")
        return Sourced(value, source, tuple(path))

    def interval(self, source: str, *path: str) -> Interval:
        """A paired comparison's difference and interval (medr1/evaluate/paired.py's keys) at `path`."""
        return Interval(self(source, *path, "difference"), self(source, *path, "interval", "0"),
                        self(source, *path, "interval", "1"))

    def number(self, source: str, *path: str) -> bool:
        """True when the value exists and is a number (a format rate is null for a zero-shot prompt)."""
        try:
            value = self._find(source, path)
        except PipelineError:
            return False
        return isinstance(value, int | float) and not isinstance(value, bool)

    def has(self, source: str, *path: str) -> bool:
        try:
            self._find(source, path)
        except PipelineError:
            return False
        return True
