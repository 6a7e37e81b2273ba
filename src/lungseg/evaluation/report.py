"""The evaluation report: tables, best and worst slices with error maps, Dice against lung size."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from lungseg.dataset.store import BuiltDataset
from lungseg.imaging import to_display
from lungseg.reporting import markdown_table

if TYPE_CHECKING:
    from lungseg.evaluation.evaluate import Evaluation

TRUE_POSITIVE = (60, 200, 90)
FALSE_POSITIVE = (230, 60, 50)
FALSE_NEGATIVE = (50, 120, 240)
GALLERY = 4


def error_map(
    grey: np.ndarray, predicted: np.ndarray, truth: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """RGB picture: true positive green, false positive red, false negative blue."""
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for region, colour in (
        (predicted & truth, TRUE_POSITIVE),
        (predicted & ~truth, FALSE_POSITIVE),
        (~predicted & truth, FALSE_NEGATIVE),
    ):
        rgb[region] = (1 - alpha) * rgb[region] + alpha * np.asarray(colour, np.float32)
    return rgb.astype(np.uint8)


def _gallery(
    dataset: BuiltDataset,
    rows: list[dict[str, Any]],
    masks: dict[str, np.ndarray],
    path: Path,
    title: str,
) -> None:
    by_id = {r["slice_id"]: r for r in dataset.rows}
    ordered = sorted(rows, key=lambda r: float(r["dice"]))
    picked = [("worst", r) for r in ordered[:GALLERY]] + [
        ("best", r) for r in ordered[-GALLERY:][::-1]
    ]
    fig, axes = plt.subplots(2, GALLERY, figsize=(3.3 * GALLERY, 7.0), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (label, row) in zip(axes.ravel(), picked, strict=False):
        record = dataset.load(by_id[row["slice_id"]])
        grey = to_display(record.image, record.intensity)
        ax.imshow(error_map(grey, masks[row["slice_id"]], record.lung != 0))
        name = str(row["slice_id"]).split("/", 1)[1].split("#")[0]
        ax.set_title(f"{label}: {name}\nDice {float(row['dice']):.4f}", fontsize=8)
    fig.suptitle(f"{title}: green correct, red false lung, blue missed lung", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _scatter(rows: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for source in sorted({r["source"] for r in rows}):
        subset = [r for r in rows if r["source"] == source]
        ax.scatter(
            [r["lung_fraction"] for r in subset], [r["dice"] for r in subset], s=12, label=source
        )
    ax.set_xlabel("lung fraction of the slice")
    ax.set_ylabel("Dice")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _size_bins(rows: list[dict[str, Any]]) -> list[list[object]]:
    """Mean Dice by lung-fraction thirds within each source (small lungs lie near apex and base)."""
    table = []
    for source in sorted({r["source"] for r in rows}):
        subset = sorted(
            (r for r in rows if r["source"] == source), key=lambda r: r["lung_fraction"]
        )
        thirds = np.array_split(np.arange(len(subset)), 3)
        cells: list[object] = [source]
        for third in thirds:
            chosen = [subset[i] for i in third]
            if chosen:
                low, high = chosen[0]["lung_fraction"], chosen[-1]["lung_fraction"]
                mean = np.mean([r["dice"] for r in chosen])
                cells.append(f"{mean:.4f} ({low:.2f}-{high:.2f}, n={len(chosen)})")
            else:
                cells.append("-")
        table.append(cells)
    return table


def write_evaluation_report(
    out: Path, dataset: BuiltDataset, result: Evaluation, masks: dict[str, np.ndarray]
) -> Path:
    summary = result.summary
    lines = [
        f"# Evaluation on the {summary['split']} split",
        "",
        f"Model `{summary['model']}`, dataset `{dataset.folder}`; per-slice scores: `per_slice.csv`.",
        "",
        "## Scores (mean / median over slices)",
        "",
    ]
    rows = []
    for source, stats in summary["sources"].items():
        cells: list[object] = [source, stats["slices"]]
        for score in ("dice", "iou", "precision", "recall", "hd95"):
            cells.append(f"{stats[score]['mean']:.4f} / {stats[score]['median']:.4f}")
        cells.append(f"{stats['dice_no_postprocess']['mean']:.4f}")
        rows.append(cells)
    hd95_unit = "mm" if any(r["hd95_unit"] == "mm" for r in result.rows) else "px"
    header = [
        "source",
        "slices",
        "Dice",
        "IoU",
        "precision",
        "recall",
        f"HD95 ({hd95_unit})",
        "Dice, no post-proc.",
    ]
    lines += [markdown_table(header, rows), ""]
    lines += ["## Worst slices", ""]
    for source, stats in summary["sources"].items():
        worst = ", ".join(
            f"{w['slice_id'].split('/', 1)[1]} ({w['dice']:.4f})" for w in stats["worst5"]
        )
        lines.append(f"- {source}: {worst}")
    lines.append("")
    variant_names = list(next(iter(summary["sources"].values()))["variants"])
    if variant_names:
        lines += [
            "## Orientation and file format",
            "",
            "Mean Dice of each variant minus the upright mean (the prediction on a turned "
            "slice is turned back before scoring; png8 and jpeg are the slice saved as 8-bit PNG "
            "and as JPEG quality 75).",
            "",
        ]
        variant_rows = []
        for source, stats in summary["sources"].items():
            variant_rows.append(
                [source] + [f"{stats['variants'][v]['minus_upright']:+.4f}" for v in variant_names]
            )
        lines += [markdown_table(["source", *variant_names], variant_rows), ""]
    pictures = []
    for source in summary["sources"]:
        name = f"best_worst_{source}.png"
        _gallery(
            dataset, [r for r in result.rows if r["source"] == source], masks, out / name, source
        )
        pictures.append(name)
    _scatter(result.rows, out / "dice_vs_lung_fraction.png")
    lines += [
        "## Where it fails",
        "",
        *[f"![{p}]({p})" for p in pictures],
        "",
        "## Dice against lung size",
        "",
        "Slices of each source in thirds by lung fraction (the smallest cross-sections lie "
        "near the apex and the base):",
        "",
        markdown_table(
            ["source", "smallest third", "middle third", "largest third"], _size_bins(result.rows)
        ),
        "",
        "![Dice against lung fraction](dice_vs_lung_fraction.png)",
        "",
    ]
    series = summary.get("series")
    if series:
        volumes = series["volume_ml"]
        lines += [
            "## A whole scan, level by level",
            "",
            f"`{series['scan']}`: {series['slices']} slices. Predicted lung volume "
            f"{volumes['total'] / 1000:.2f} L (right {volumes['right'] / 1000:.2f} L, left "
            f"{volumes['left'] / 1000:.2f} L). Of the {series['lung_free_slices_by_threshold']} slices "
            f"without lung by HU threshold, {series['of_those_predicted_empty']} are predicted empty; "
            f"mean Dice against the threshold labels {series['dice_vs_threshold_labels_mean']:.4f}.",
            "",
            "![lung area per level](series_area.png)",
            "",
            "![every level with its predicted mask](series_levels.png)",
            "",
        ]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
