"""Training curves from Lightning's metrics.csv: loss, Dice, IoU and pixel accuracy per epoch."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lungseg.reporting import save_figure

PANELS = (
    ("loss", "loss (Dice + CE)"),
    ("dice", "Dice"),
    ("iou", "IoU"),
    ("accuracy", "pixel accuracy"),
)


def read_epochs(metrics_csv: Path) -> dict[str, dict[int, float]]:
    """``{metric: {epoch: value}}`` from a CSVLogger file (train and val rows are separate)."""
    series: dict[str, dict[int, float]] = {}
    with metrics_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in ("", None):
                    series.setdefault(key, {})[epoch] = float(value)
    return series


def plot_curves(metrics_csv: Path, out: Path, monitor: str = "val_dice") -> Path:
    """Write the 4-panel curve picture, the checkpoint's epoch (the best ``monitor``)
    marked; returns its path."""
    series = read_epochs(metrics_csv)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (name, title) in zip(axes, PANELS, strict=True):
        for stage, style in (("train", "-"), ("val", "-o")):
            values = series.get(f"{stage}_{name}", {})
            if values:
                epochs = sorted(values)
                ax.plot(epochs, [values[e] for e in epochs], style, markersize=3, label=stage)
            infection = series.get(f"{stage}_infection_dice", {}) if name == "dice" else {}
            if infection:  # a two-head model: the infection head's soft Dice beside the lungs'
                epochs = sorted(infection)
                ax.plot(
                    epochs,
                    [infection[e] for e in epochs],
                    style,
                    markersize=3,
                    alpha=0.6,
                    label=f"{stage} infection",
                )
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    watched, val_dice = series.get(monitor, {}), series.get("val_dice", {})
    if watched and val_dice:
        best_epoch = max(watched, key=watched.__getitem__)
        axes[1].axvline(best_epoch, color="grey", linestyle=":", label="checkpoint")
        value = val_dice.get(best_epoch, float("nan"))
        axes[1].set_title(f"Dice (checkpoint: epoch {best_epoch}, val {value:.4f})")
    save_figure(fig, out, 90)
    return out
