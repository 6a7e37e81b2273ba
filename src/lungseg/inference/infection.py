"""COVID-19 infection on top of the lung mask: labels, involvement and a severity score.

Ground glass and consolidation count only inside the lungs; pleural effusion
lies outside the lung (in the pleural space) and is kept and reported on its own.

Involvement is the share of each lung covered by ground glass or consolidation.
The severity score applies the common CT severity scale (Pan et al., Radiology
2020), defined per lobe, to each whole lung: 0 none, 1 below 5 %, 2 5-25 %,
3 26-50 %, 4 51-75 %, 5 above 75 %; the total is the sum over both lungs (0-10).
"""

from __future__ import annotations

import numpy as np

from lungseg.dataset.labels import (
    CONSOLIDATION,
    GROUND_GLASS,
    LUNG_LEFT,
    LUNG_RIGHT,
    PLEURAL_EFFUSION,
)
from lungseg.imaging import Intensity
from lungseg.inference.model import SegmentationModel

SEVERITY_BOUNDS = (0.05, 0.25, 0.50, 0.75)


def infection_labels(
    model: SegmentationModel, planes: list[np.ndarray], intensity: Intensity
) -> np.ndarray:
    """Class indices (0 none, 1 ground glass, 2 consolidation, 3 effusion) per plane, batched."""
    return np.stack(model.class_maps(planes, [intensity] * len(planes)))


def restrict_to_lung(infection: np.ndarray, lung: np.ndarray) -> np.ndarray:
    """Ground glass and consolidation only inside the lung; effusion wherever predicted."""
    out = infection.copy()
    lesion = np.isin(out, (GROUND_GLASS, CONSOLIDATION))
    out[lesion & (lung == 0)] = 0
    return out


def severity_score(share: float) -> int:
    """0-5 from the share of a lung involved (see the module docstring)."""
    if share <= 0:
        return 0
    return 1 + sum(share > bound for bound in SEVERITY_BOUNDS)


def involvement(lung: np.ndarray, infection: np.ndarray) -> dict[str, object]:
    """Share of the right, left and both lungs covered by ground glass or consolidation,
    each lung's severity score (0-5), the total (0-10), and effusion in pixels."""
    lesion = np.isin(infection, (GROUND_GLASS, CONSOLIDATION))
    shares = {}
    for name, mask in (
        ("right", lung == LUNG_RIGHT),
        ("left", lung == LUNG_LEFT),
        ("total", lung != 0),
    ):
        area = int(mask.sum())
        shares[name] = float((lesion & mask).sum() / area) if area else 0.0
    scores = {side: severity_score(shares[side]) for side in ("right", "left")}
    return {
        "share": {k: round(v, 4) for k, v in shares.items()},
        "severity": {**scores, "total": scores["right"] + scores["left"]},
        "ground_glass_px": int((infection == GROUND_GLASS).sum()),
        "consolidation_px": int((infection == CONSOLIDATION).sum()),
        "effusion_px": int((infection == PLEURAL_EFFUSION).sum()),
    }
