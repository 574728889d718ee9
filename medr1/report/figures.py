"""PNG heatmaps for the report (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path


def heatmap(table: dict[str, dict[str, float]], rows: list[str], columns: list[str], title: str, path: Path,
            row_label: str, column_label: str, diverging: bool = False) -> Path:
    """Write a heatmap of table[row][column] (blank where a cell is missing) with each value printed in it."""
    return heatmaps({title: table}, rows, columns, path, row_label, column_label, diverging)


def heatmaps(tables: dict[str, dict[str, dict[str, float]]], rows: list[str], columns: list[str], path: Path,
             row_label: str, column_label: str, diverging: bool = False) -> Path:
    """Heatmaps of several tables (title -> table[row][column]) side by side, on one colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grids = {title: np.array([[table.get(r, {}).get(c, np.nan) for c in columns] for r in rows], dtype=float)
             for title, table in tables.items()}
    width = max(5.5, 2.2 + 1.15 * len(columns))
    figure, axes = plt.subplots(1, len(grids), figsize=(width * len(grids), 1.2 + 0.55 * len(rows)), squeeze=False)
    limit = 1.0
    if diverging:
        finite = [np.nanmax(np.abs(values)) for values in grids.values() if np.isfinite(values).any()]
        limit = max([0.05, *map(float, finite)])
    for axis, (title, values) in zip(axes[0], grids.items()):
        if diverging:
            image = axis.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        else:
            image = axis.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        axis.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
        axis.set_yticks(range(len(rows)), rows)
        axis.set_xlabel(column_label)
        axis.set_ylabel(row_label)
        for i in range(len(rows)):
            for j in range(len(columns)):
                if np.isfinite(values[i, j]):
                    strong = abs(values[i, j]) > 0.6 * limit if diverging else values[i, j] < 0.55
                    shade = "white" if strong else "black"
                    axis.text(j, i, f"{values[i, j]:+.2f}" if diverging else f"{values[i, j]:.2f}",
                              ha="center", va="center", color=shade, fontsize=9)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
        axis.set_title(title)
    return save_figure(figure, path)


def save_figure(figure, path: Path) -> Path:
    """`figure` as a PNG at `path`, closed after."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
