"""The evaluation report: tables, best and worst slices with error maps, Dice against lung size."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from lungseg.dataset.store import BuiltDataset
from lungseg.evaluation.variants import SIDE_OK, WORST_KEPT
from lungseg.imaging import Intensity, to_display
from lungseg.imaging.orientation import DIHEDRAL, dihedral_name, undo_dihedral
from lungseg.imaging.render import RENDERINGS
from lungseg.inference.model import SegmentationModel, segment_slices
from lungseg.reporting import markdown_table, save_figure
from lungseg.visualize import overlay

if TYPE_CHECKING:
    from lungseg.evaluation.variants import Evaluation

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
    by_id = {r.slice_id: r for r in dataset.rows}
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
    save_figure(fig, path, 80)


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
    save_figure(fig, path, 90)


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


def _worst_renderings(
    worst: dict[str, list[tuple[float, str, np.ndarray, np.ndarray]]],
    dataset: BuiltDataset,
    path: Path,
) -> None:
    """One row per rendering (PNG): its worst slices as the user's picture, with the error map."""
    by_id = {r.slice_id: r for r in dataset.rows}
    names = [n for n in worst if n.endswith(".png")]
    fig, axes = plt.subplots(
        len(names),
        WORST_KEPT,
        figsize=(2.6 * WORST_KEPT, 2.7 * len(names)),
        squeeze=False,
    )
    for ax in axes.ravel():
        ax.axis("off")
    for row_axes, name in zip(axes, names, strict=True):
        for ax, (dice, slice_id, picture, predicted) in zip(
            row_axes, sorted(worst[name], key=lambda w: w[0])[:WORST_KEPT], strict=False
        ):
            record = dataset.load(by_id[slice_id])
            grey = np.asarray(Image.fromarray(picture).resize(record.lung.shape[::-1]))
            rendering = RENDERINGS[name.split(".")[0]]
            upright = undo_dihedral(grey, rendering.turns, rendering.flip)
            ax.imshow(error_map(upright, predicted != 0, record.lung != 0))
            short = slice_id.split("/", 1)[1].split("#")[0]
            ax.set_title(f"{name}: {short}\nDice {dice:.4f}", fontsize=7)
    fig.suptitle(
        "worst slices of each rendering (shown upright): red false lung, blue missed", fontsize=9
    )
    save_figure(fig, path, 70, top=0.98)  # room for the title


def examples_picture(model: SegmentationModel, image: np.ndarray, path: Path) -> Path:
    """One HU slice as users send it: each exporter's PNG (in the orientation it is saved
    in) and the 8 orientations, each with the lungs the model returns (red: patient's
    right lung, blue: left). Sides come from anatomy, so they follow the patient."""
    from lungseg.evaluation.variants import variants_of

    cases = [v for v in variants_of(image, Intensity.HU) if not v.name.endswith(".jpg")]
    labels = segment_slices(model, [v.image for v in cases], [v.intensity for v in cases])
    columns = 8
    rows = -(-len(cases) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, case, lung in zip(axes.ravel(), cases, labels, strict=False):
        grey = (
            case.image
            if case.intensity is Intensity.DISPLAY
            else to_display(case.image, case.intensity)
        )
        ax.imshow(overlay(grey, lung))
        ax.set_title(case.name.replace(".png", ""), fontsize=7)
    fig.suptitle(
        "one test slice as users send it; red: patient's right lung, blue: left", fontsize=9
    )
    save_figure(fig, path, 70)
    return path


def renderings_table(summary: dict[str, Any]) -> tuple[list[str], list[list[object]]]:
    """Rows: each exporter as PNG and JPEG; per HU source mean Dice, worst slice, minus HU."""
    sources = [
        s for s, stats in summary["sources"].items() if any("." in v for v in stats["variants"])
    ]
    header = ["rendering", "saved as"]
    for source in sources:
        header += [f"{source}: mean Dice", "worst slice", "minus HU"]
    rows: list[list[object]] = []
    for rendering in RENDERINGS.values():
        for suffix, saved in (("png", "PNG"), ("jpg", "JPEG q75")):
            cells: list[object] = [f"{rendering.name}: {rendering.description}", saved]
            for source in sources:
                v = summary["sources"][source]["variants"][f"{rendering.name}.{suffix}"]
                cells += [
                    f"{v['mean_dice']:.4f}",
                    f"{v['min_dice']:.4f}",
                    f"{v['minus_upright']:+.4f}",
                ]
            rows.append(cells)
    hu_row: list[object] = ["HU as read (DICOM, NIfTI)", "-"]
    for source in sources:
        hu_row += [f"{summary['sources'][source]['dice']['mean']:.4f}", "-", "-"]
    return header, [hu_row, *rows]


def write_evaluation_report(
    out: Path,
    dataset: BuiltDataset,
    result: Evaluation,
    masks: dict[str, np.ndarray],
    worst: dict[str, list[tuple[float, str, np.ndarray, np.ndarray]]] | None = None,
    model: SegmentationModel | None = None,
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
        worst5 = ", ".join(
            f"{w['slice_id'].split('/', 1)[1]} ({w['dice']:.4f})" for w in stats["worst5"]
        )
        lines.append(f"- {source}: {worst5}")
    lines.append("")
    header, table = renderings_table(summary)
    if table and len(header) > 2:
        lines += [
            "## Renderings: every HU test slice as people export it",
            "",
            "Each HU slice is turned into an 8-bit picture the way an exporter does "
            "(`lungseg.imaging.render.RENDERINGS`), saved as PNG and as JPEG quality 75, and "
            "segmented; the prediction is turned back (the original exporter saves upside "
            "down) and scored against the reference. 'minus HU': mean Dice minus the mean of "
            "the same slices read in HU.",
            "",
            markdown_table(header, table),
            "",
        ]
        if worst:
            _worst_renderings(worst, dataset, out / "worst_renderings.png")
            lines += ["![worst slices per rendering](worst_renderings.png)", ""]
        if model is not None:
            first = next(r for r in result.rows if any(k.endswith(".png") for k in r))
            record = dataset.load(next(r for r in dataset.rows if r.slice_id == first["slice_id"]))
            examples_picture(model, record.image, out / "renderings_examples.png")
            lines += [
                "One test slice through every exporter and orientation, with the lungs found:",
                "",
                "![one slice, every rendering and orientation](renderings_examples.png)",
                "",
            ]
    orientations = [dihedral_name(t, f) for t, f in DIHEDRAL]
    side_rows, turn_rows = [], []
    for source, stats in summary["sources"].items():
        sides = stats.get("sides_correct", {})
        if sides:
            side_rows.append(
                [source] + [f"{100 * sides[o]:.1f} %" if o in sides else "-" for o in orientations]
            )
        turn_rows.append(
            [source]
            + [
                f"{stats['variants'][o]['minus_upright']:+.4f}" if o in stats["variants"] else "0"
                for o in orientations
            ]
        )
    if side_rows:
        lines += [
            "## Orientation: lung Dice and right/left sides",
            "",
            "Each slice turned and mirrored and segmented as a photo is (where the model's "
            "orientation head finds a picture turned, it is segmented upright and the masks "
            "turned back); the prediction is turned back and scored. Mean Dice minus upright:",
            "",
            markdown_table(["source", *orientations], turn_rows),
            "",
            f"Slices whose right and left lung are right (at least {SIDE_OK:.0%} of the lung "
            "found carries its own side; the sides come from anatomy, so a mirrored picture "
            "must still show the patient's right lung as right):",
            "",
            markdown_table(["source", *orientations], side_rows),
            "",
        ]
    turn_found = [
        [source] + [f"{100 * found[o]:.1f} %" if o in found else "-" for o in orientations]
        for source, stats in summary["sources"].items()
        if (found := stats.get("turn_found", {}))
    ]
    if turn_found:
        lines += [
            "Pictures whose turn the orientation head finds (upright: left as it is):",
            "",
            markdown_table(["source", *orientations], turn_found),
            "",
        ]
    per_patient = [
        [source, p, f"{d:.4f}"]
        for source, stats in summary["sources"].items()
        for p, d in stats.get("dice_per_patient", {}).items()
    ]
    if per_patient:
        lines += [
            "## Per test patient",
            "",
            markdown_table(["source", "patient", "mean Dice"], per_patient),
            "",
        ]
    format_rows = [
        [source, f"{stats['variants']['jpeg']['minus_upright']:+.4f}"]
        for source, stats in summary["sources"].items()
        if "jpeg" in stats["variants"]
    ]
    if format_rows:
        lines += [
            "8-bit sources saved again as JPEG quality 75, mean Dice minus as stored:",
            "",
            markdown_table(["source", "JPEG"], format_rows),
            "",
        ]
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
    lines += _apex_base_lines(summary.get("apex_base"))
    lines += _check_lines(summary.get("checks"))
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


def _apex_base_lines(figures: dict[str, Any] | None) -> list[str]:
    """The apex and base section: per source, the lowest mean Dice and share of right
    sides over every way a slice is sent, then each way's figures."""
    if not figures:
        return []
    targets = figures["targets"]
    sources = {k: v for k, v in figures.items() if k != "targets"}
    ways = sorted({w for stats in sources.values() for w in stats["ways"]})
    lines = [
        "## Apex and base of single slices",
        "",
        "The first and last fifth of each test patient's lung-bearing slices (and of the "
        "whole scan's, against its HU threshold labels; that scan is a training scan), each "
        "sent alone as a picture in every orientation and rendering. Target: mean Dice "
        f"≥ {targets['mean_dice']} and sides right on ≥ {targets['sides_correct']:.0%} of "
        "the slices, in each way.",
        "",
        markdown_table(
            ["source", "slices", "lowest mean Dice", "lowest sides right"],
            [
                [
                    source,
                    stats["slices"],
                    f"{stats['lowest_mean_dice']:.4f}",
                    f"{100 * stats['lowest_sides_correct']:.1f} %",
                ]
                for source, stats in sources.items()
            ],
        ),
        "",
        "Mean Dice / sides right, each way:",
        "",
        markdown_table(
            ["way", *sources],
            [
                [way]
                + [
                    f"{stats['ways'][way]['mean_dice']:.4f} / "
                    f"{100 * stats['ways'][way]['sides_correct']:.0f} %"
                    if way in stats["ways"]
                    else "-"
                    for stats in sources.values()
                ]
                for way in ways
            ],
        ),
        "",
    ]
    return lines


def _check_lines(checks: dict[str, Any] | None) -> list[str]:
    """The check section: how often ``review`` flags wrong answers and right ones."""
    if not checks:
        return []

    def share(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f} %"

    rows = [
        [
            name,
            stats["answers"],
            f"{share(stats['low_dice_flagged'])} of {stats['low_dice']}",
            f"{share(stats['high_dice_flagged'])} of {stats['high_dice']}",
            f"{share(stats.get('sides_wrong_flagged'))} of {stats.get('sides_wrong', 0)}",
            stats["refused"],
        ]
        for name, stats in [("all", checks), *checks["sources"].items()]
    ]
    targets = checks["targets"]
    reasons = ", ".join(f"{k} ({v})" for k, v in checks["reasons_on_high_dice"].items())
    return [
        "## Saying when to doubt an answer",
        "",
        "Every slice in every way it was sent (orientations, renderings, JPEG), checked as "
        "`lungseg predict` checks it (`lungseg.inference.check`). Flagged: `review` or "
        f"`refused`. Targets: at least {targets['low_dice_flagged']:.0%} of the answers "
        f"with lung Dice below 0.85 flagged, at most {targets['high_dice_flagged']:.0%} of "
        "those at 0.95 or above. Sides wrong: answers in one of the 8 orientations, lung "
        "Dice 0.85 or above, whose right and left came out swapped.",
        "",
        markdown_table(
            [
                "source",
                "answers",
                "Dice < 0.85 flagged",
                "Dice ≥ 0.95 flagged",
                "sides wrong flagged",
                "refused",
            ],
            rows,
        ),
        "",
        f"Reasons given to answers at Dice ≥ 0.95: {reasons or 'none'}.",
        "",
    ]
