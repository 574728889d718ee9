"""The "candidate against production" page: a promotion attempt's paired comparison, overall and slice by
slice, as a table and a plot of each difference with its interval (written by `medr1 registry promote --page`
and by the pipeline flow's automatic promotion, from the audit event the attempt logged)."""

from __future__ import annotations

from pathlib import Path

from medr1.report.content import Figure, Report, Sourced, Table
from medr1.report.figures import save_figure
from medr1.report.render import write_report

EVENT = "promotion event"  # the Sourced source of every number: the audit event's JSON


def comparison_rows(event: dict) -> list[dict]:
    """A promotion attempt's comparison, overall then each slice: both accuracies, the difference, its interval, n,
    McNemar p and what the attempt's gate made of the slice (the table of the CLI, the flow's artifact, the page)."""
    from medr1.config import PromotionGate
    from medr1.registry.comparison import slice_rows

    comparison = event["evidence"]["comparison"]
    slices = slice_rows(comparison, PromotionGate(**event["gate"]))

    def row(slice_name: str, group: str, numbers: dict, outcome: str) -> dict:
        return {"slice": slice_name, "group": group, "candidate": numbers["accuracy_a"],
                "current": numbers["accuracy_b"], "difference": numbers["difference"],
                "interval low": numbers["interval"][0], "interval high": numbers["interval"][1],
                "n": numbers["n"], "McNemar p": numbers["mcnemar_p"], "outcome": outcome}

    return [row("overall", "all", comparison["overall"], "-")] + [
        row(item["slice"], item["group"], item, item["outcome"]) for item in slices]


def _figure(rows: list[dict], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{row['slice']}: {row['group']}" for row in rows]
    differences = [row["difference"] for row in rows]
    errors = [[row["difference"] - row["interval low"] for row in rows],
              [row["interval high"] - row["difference"] for row in rows]]
    colours = ["#b2182b" if row["outcome"].startswith("fails") else "#2166ac" if row["slice"] == "overall"
               else "#555555" for row in rows]
    figure, axis = plt.subplots(figsize=(8, 1.0 + 0.35 * len(rows)))
    positions = list(range(len(rows)))[::-1]
    for position, difference, low, high, colour in zip(positions, differences, *errors, colours):
        axis.errorbar(difference, position, xerr=[[low], [high]], fmt="o", color=colour, capsize=3)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_yticks(positions, labels)
    axis.set_xlabel("candidate - current accuracy (paired, same questions), with its interval")
    axis.set_title(title)
    return save_figure(figure, path)


def write_comparison_page(event: dict, out: Path) -> Path:
    """`out`/index.html (and summary.md) for one promotion attempt; returns the HTML's path."""
    comparison = event["evidence"]["comparison"]
    rows = comparison_rows(event)
    level = f"{comparison['settings']['level']:.0%}"
    paths = [("evidence", "comparison", "overall")] + [
        ("evidence", "comparison", f"per_{row['slice'].replace(' ', '_')}", row["group"]) for row in rows[1:]]
    keys = {"candidate": "accuracy_a", "current": "accuracy_b", "difference": "difference", "n": "n",
            "McNemar p": "mcnemar_p"}

    def cells(row: dict, path: tuple[str, ...]) -> list:
        values = [Sourced(row[column], EVENT, (*path, key)) for column, key in keys.items()]
        interval = [Sourced(row[f"interval {side}"], EVENT, (*path, "interval", str(index)))
                    for index, side in enumerate(("low", "high"))]
        return [row["slice"], row["group"], *values[:3], *interval, *values[3:], row["outcome"]]

    verdict = "granted" if event["granted"] else "refused"
    title = f"{event['version']} against {comparison['current_version']} for {event['alias']}: {verdict}"
    report = Report(f"Candidate against {event['alias']}", [
        f"{title}, {event['at']} by {event['by']}.",
        f"Same {comparison['overall']['n']} questions: {comparison['split']['path']} (md5 {comparison['split']['md5']})"
        + ("; the current version was re-evaluated on them." if comparison["current_reevaluated"] else "."),
        (f"Differences are candidate - current accuracy with {level} paired bootstrap intervals "
         f"({comparison['settings']['resamples']} resamples of the questions, seed {comparison['settings']['seed']}) "
         "and McNemar's exact p (medr1/evaluate/paired.py)."),
        *[f"Refused: {failure}" for failure in event["failed_gates"]],
    ], [
        Figure("Difference per slice, with its interval", _figure(rows, title, out / "figures" / "comparison.png")),
        Table("Candidate against current, overall and per slice",
              ["slice", "group", "candidate", "current", "difference", f"{level} low", f"{level} high", "n",
               "McNemar p", "gate"],
              [cells(row, path) for row, path in zip(rows, paths)],
              f"Gate {event['alias']}: {event['gate']}"),
    ])
    write_report(report, out)
    return out / "index.html"
