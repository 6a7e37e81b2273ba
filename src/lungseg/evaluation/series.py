"""A whole scan from below the lungs to above them: lung-free levels, small apex and base lungs.

The labelled slices are mostly mid-lung. This check runs the model on every
slice of a real scan and shows each level with its predicted mask, beside the
threshold labels of ``dataset pseudo-label`` for comparison.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from lungseg.core.masks import lung_measures
from lungseg.core.metrics import slice_scores
from lungseg.dataset.pseudo import threshold_lungs
from lungseg.imaging import read_image, to_display
from lungseg.inference.model import SegmentationModel, segment_image
from lungseg.reporting import save_figure
from lungseg.visualize import every_level


def check_series(model: SegmentationModel, scan_path: Path, out: Path) -> dict[str, Any]:
    """Segment a scan, write ``series_levels.png`` and ``series_area.png``; return the figures."""
    scan = read_image(scan_path)
    labels = segment_image(model, scan)  # 1 right, 2 left lung
    predicted = labels != 0
    reference = threshold_lungs(scan)
    levels = every_level(to_display(scan.array, scan.intensity), labels)
    Image.fromarray(levels).save(out / "series_levels.png")
    pixel_mm2 = float(np.prod(scan.geometry.spacing[-2:])) if scan.geometry.spacing else 1.0
    fig, ax = plt.subplots(figsize=(8, 3.4))
    ax.plot(predicted.sum(axis=(1, 2)) * pixel_mm2 / 100.0, "-o", markersize=3, label="model")
    ax.plot(reference.sum(axis=(1, 2)) * pixel_mm2 / 100.0, "--", label="HU threshold labels")
    ax.set_xlabel("slice (inferior to superior)")
    ax.set_ylabel("lung area (cm²)")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, out / "series_area.png", 90)
    reference_free = ~reference.any(axis=(1, 2))
    per_slice = [slice_scores(p, r)["dice"] for p, r in zip(predicted, reference, strict=True)]
    figures = {
        "scan": str(scan_path),
        "slices": int(scan.array.shape[0]),
        "volume_ml": {
            k: round(v, 1) for k, v in lung_measures(labels, scan.geometry.spacing).items()
        },
        "lung_free_slices_by_threshold": int(reference_free.sum()),
        "of_those_predicted_empty": int((~predicted.any(axis=(1, 2)) & reference_free).sum()),
        "dice_vs_threshold_labels_mean": round(float(np.mean(per_slice)), 4),
        "per_slice": [
            {
                "slice": index,
                "dice_vs_threshold": round(dice, 4),
                "model_only_px": int((p & ~r).sum()),
                "threshold_only_px": int((~p & r).sum()),
            }
            for index, (dice, p, r) in enumerate(zip(per_slice, predicted, reference, strict=True))
        ],
    }
    (out / "series.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures
