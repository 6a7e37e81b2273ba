"""The dataset report: Markdown plus pictures of what the build produced.

Pictures: sample slices with mask overlays per split, the intensity histograms
(HU and display values, lung against the rest), the lung-fraction distribution
per source, and thumbnails of what the quality checks excluded.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from lungseg.dataset.config import BuildConfig, BuildSummary
from lungseg.dataset.qc import ALL_CHECKS
from lungseg.dataset.split import SPLITS
from lungseg.dataset.store import BuiltDataset, ManifestRow, SliceRecord
from lungseg.imaging import Intensity, to_display
from lungseg.reporting import markdown_table, save_figure
from lungseg.visualize import overlay

SAMPLES_PER_SPLIT = 8
MAX_QC_THUMBNAILS = 24
MAX_HISTOGRAM_SLICES = 60


def _spread(rows: list[ManifestRow], count: int) -> list[ManifestRow]:
    """``count`` rows spread evenly over the list, alternating sources."""
    by_source: dict[str, list[ManifestRow]] = {}
    for row in rows:
        by_source.setdefault(row.source, []).append(row)
    picked: list[ManifestRow] = []
    queues = [group[:: max(1, len(group) // count)] for group in by_source.values()]
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return picked


def _picture(record: SliceRecord) -> np.ndarray:
    grey = to_display(record.image, record.intensity)
    return overlay(grey, record.lung, record.infection)


def _grid(
    records: list[tuple[SliceRecord, str]], path: Path, columns: int = 4, title: str = ""
) -> None:
    rows = max(1, -(-len(records) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (record, caption) in zip(axes.ravel(), records, strict=False):
        ax.imshow(_picture(record))
        ax.set_title(caption, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path, 90)


def _caption(row: ManifestRow) -> str:
    name = row.case_id.split("/", 1)[1]
    flags = f"\n{';'.join(row.qc_flags)}" if row.qc_flags else ""
    return f"{row.source}\n{name} [{row.split}] lung {row.lung_fraction:.2f}{flags}"


def _samples(dataset: BuiltDataset, out: Path) -> list[str]:
    names = []
    for split in SPLITS:
        rows = dataset.select(split)
        if not rows:
            continue
        picked = _spread(rows, SAMPLES_PER_SPLIT)
        name = f"samples_{split}.png"
        _grid(
            [(dataset.load(r), _caption(r)) for r in picked],
            out / name,
            title=f"{split}: samples with lung masks",
        )
        names.append(name)
    return names


def _histograms(dataset: BuiltDataset, path: Path) -> None:
    fig, (ax_hu, ax_display) = plt.subplots(1, 2, figsize=(11, 3.6))
    for kind, ax, bins, xlabel in (
        (Intensity.HU, ax_hu, np.linspace(-1500, 1000, 126), "Hounsfield units"),
        (Intensity.DISPLAY, ax_display, np.arange(0, 257, 4), "8-bit display value"),
    ):
        rows = [r for r in dataset.select() if r.intensity is kind]
        rows = rows[:: max(1, len(rows) // MAX_HISTOGRAM_SLICES)]
        if not rows:
            ax.set_title(f"no {kind.value} slices")
            ax.axis("off")
            continue
        lung_values, other_values = [], []
        for row in rows:
            record = dataset.load(row)
            lung_values.append(record.image[record.lung != 0].ravel())
            other_values.append(record.image[record.lung == 0].ravel())
        ax.hist(
            np.concatenate(other_values), bins=bins, alpha=0.6, density=True, label="outside lung"
        )
        ax.hist(np.concatenate(lung_values), bins=bins, alpha=0.6, density=True, label="lung")
        ax.set_xlabel(xlabel)
        ax.set_yticks([])
        ax.legend(fontsize=8)
        ax.set_title(f"{kind.value} slices ({len(rows)} sampled)")
    save_figure(fig, path, 90)


def _lung_fractions(dataset: BuiltDataset, path: Path) -> None:
    sources = sorted({r.source for r in dataset.rows})
    fig, axes = plt.subplots(1, len(sources), figsize=(4.5 * len(sources), 3.2), squeeze=False)
    for ax, source in zip(axes[0], sources, strict=True):
        for split in SPLITS:
            values = [r.lung_fraction for r in dataset.select(split) if r.source == source]
            if values:
                ax.hist(
                    values,
                    bins=np.linspace(0, 0.8, 33),
                    alpha=0.6,
                    label=f"{split} ({len(values)})",
                )
        ax.set_title(source, fontsize=9)
        ax.set_xlabel("lung fraction of the slice")
        ax.legend(fontsize=8)
    save_figure(fig, path, 90)


def split_table(rows: list[ManifestRow]) -> list[list[str]]:
    """Slices per source and split of the rows used for training, patients in brackets,
    and a last row of all sources."""
    used = [r for r in rows if r.use]
    sources = sorted({r.source for r in rows})
    counts = Counter((r.source, r.split) for r in used)
    patients = Counter((s, sp) for s, sp, _ in {(r.source, r.split, r.patient) for r in used})
    table = [
        [source] + [f"{counts[(source, s)]} ({patients[(source, s)]})" for s in SPLITS]
        for source in sources
    ]
    return [*table, ["all"] + [f"{sum(counts[(x, s)] for x in sources)}" for s in SPLITS]]


def check_table(rows: list[ManifestRow]) -> list[list[object]]:
    """Per source: slices, slices with the whole body in view, slices each quality check
    flagged, and slices left out of training."""
    table: list[list[object]] = []
    for source in sorted({r.source for r in rows}):
        in_source = [r for r in rows if r.source == source]
        per_check = Counter(f for r in in_source for f in r.qc_flags)
        excluded = sum(1 for r in in_source if not r.use)
        in_view = sum(1 for r in in_source if r.body_in_view)
        table.append(
            [source, len(in_source), in_view] + [per_check[c] for c in ALL_CHECKS] + [excluded]
        )
    return table


def write_report(folder: Path, config: BuildConfig, summary: BuildSummary) -> Path:
    """Write ``report/report.md`` and its pictures for the dataset built in ``folder``."""
    out = folder / "report"
    out.mkdir(exist_ok=True)
    dataset = BuiltDataset(folder)
    sources = sorted({r.source for r in dataset.rows})
    split_rows = split_table(dataset.rows)
    check_rows = check_table(dataset.rows)
    flagged = [r for r in dataset.rows if r.qc_flags]

    samples = _samples(dataset, out)
    _histograms(dataset, out / "intensity_histogram.png")
    _lung_fractions(dataset, out / "lung_fraction.png")
    qc_picture = ""
    if flagged:
        shown = flagged[:MAX_QC_THUMBNAILS]
        _grid(
            [(dataset.load(r), _caption(r)) for r in shown],
            out / "qc_flagged.png",
            title="slices flagged by QC",
        )
        qc_picture = "![slices flagged by QC](qc_flagged.png)"

    text = [
        "# Dataset report",
        "",
        f"Built by lungseg from {len(sources)} source(s): "
        + ", ".join(f"`{s}`" for s in config.sources)
        + f". Split seed {config.seed}, fractions train/val/test {config.fractions}, "
        f"lung-free slices kept: {config.keep_lung_free:.0%}, slice step {config.slice_step}.",
        "",
        "## Slices per split (patients in brackets)",
        "",
        markdown_table(["source", *SPLITS], split_rows),
        "",
        f"Stored slices: {summary.slices_stored}; used for training: {summary.slices_used}; "
        f"lung-free slices dropped: {summary.lung_free_dropped}, kept: {summary.lung_free_kept}.",
        "",
        "## Samples",
        "",
        "Right lung red, left lung blue, lung of unknown side green, infection yellow.",
        "",
        *[f"![{name}]({name})" for name in samples],
        "",
        "## Intensities",
        "",
        "HU slices are stored in HU and later mapped through the lung window [-1250, 250] HU; "
        "8-bit display slices are stored as they came.",
        "",
        "![intensity histogram](intensity_histogram.png)",
        "",
        "## Lung fraction",
        "",
        "![lung fraction](lung_fraction.png)",
        "",
        "## Quality checks",
        "",
        "Slices a check flags are stored and listed in `qc.csv` but left out of training "
        + ("(kept by --keep-flagged in this build)." if config.keep_flagged else "by default."),
        "",
        "A slice whose body is cut by the image edge (a tight crop) gets only the density and "
        "lung-fraction checks: its lungs may rightly reach the edge.",
        "",
        markdown_table(["source", "slices", "body in view", *ALL_CHECKS, "excluded"], check_rows),
        "",
        qc_picture,
        "",
    ]
    if summary.unreadable:
        text += [
            "## Unreadable files",
            "",
            *[f"- `{f}`: {why}" for f, why in summary.unreadable],
            "",
        ]
    if summary.unmatched:
        text += [
            "## Images without a mask (skipped)",
            "",
            *[f"- `{f}`" for f in summary.unmatched],
            "",
        ]
    report = out / "report.md"
    report.write_text("\n".join(text))
    return report
