"""Reward curves from the trainer's log history, as the PNG the report shows (DVCLive writes the
data that `dvc plots` draws: medr1/train/loggers.py)."""

from __future__ import annotations

from pathlib import Path

COLUMNS = {
    "reward": "reward",
    "format_reward": "rewards/format_reward/mean",
    "accuracy_reward": "rewards/accuracy_reward/mean",
    "completion_length": "completions/mean_length",
    "kl": "kl",
}


def curve_rows(history: list[dict]) -> list[dict]:
    rows = []
    for entry in history:
        if "reward" not in entry or "step" not in entry:
            continue
        row = {"step": entry["step"]}
        row.update({name: entry.get(key) for name, key in COLUMNS.items()})
        rows.append(row)
    return rows


def write_training_curves(history: list[dict], reports_dir: Path) -> dict:
    """Write reports/train_curve.png; return the first and last accuracy rewards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = curve_rows(history)
    reports_dir.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = [row["step"] for row in rows]
    for name in ("reward", "format_reward", "accuracy_reward"):
        axes[0].plot(steps, [row[name] for row in rows], label=name)
    axes[0].set_title("GRPO rewards")
    axes[0].legend()
    axes[1].plot(steps, [row["completion_length"] for row in rows])
    axes[1].set_title("completion length (tokens)")
    kl = [row["kl"] for row in rows]
    if any(value is not None for value in kl):
        axes[2].plot(steps, [value if value is not None else float("nan") for value in kl])
    else:
        axes[2].text(0.5, 0.5, "not computed: train.trl.beta is 0", ha="center", va="center",
                     transform=axes[2].transAxes)
    axes[2].set_title("KL to reference")
    for axis in axes:
        axis.set_xlabel("step")
    figure.tight_layout()
    figure.savefig(reports_dir / "train_curve.png", dpi=100)
    plt.close(figure)
    if not rows:
        return {}
    return {"first_accuracy_reward": rows[0]["accuracy_reward"], "last_accuracy_reward": rows[-1]["accuracy_reward"]}
