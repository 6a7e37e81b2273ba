"""COVID-19 infection on top of the lung mask: labels, involvement and a severity score.

Ground glass and consolidation count only inside the lungs; pleural effusion
lies outside the lung (in the pleural space) and is kept and reported on its own.

Involvement is the share of each lung covered by ground glass or consolidation.
The severity score applies the common CT severity scale (Pan et al., Radiology
2020), defined per lobe, to each whole lung: 0 none, 1 below 5 %, 2 5-25 %,
3 26-50 %, 4 51-75 %, 5 above 75 %; the total is the sum over both lungs (0-10).
A lung involved below ``SEVERITY_FLOOR`` (1 %) scores 0: a few specks of noise, a
nodule or a tumour are not COVID-19 involvement.
"""

from __future__ import annotations

import numpy as np

from lungseg.core.labels import (
    CONSOLIDATION,
    GROUND_GLASS,
    LUNG_LEFT,
    LUNG_RIGHT,
    PLEURAL_EFFUSION,
)

SEVERITY_BOUNDS = (0.05, 0.25, 0.50, 0.75)
SEVERITY_FLOOR = 0.01
"""A lung with less than this share involved scores 0 (see the module docstring)."""
ZONES = ("upper", "middle", "lower")


def restrict_to_lung(
    infection: np.ndarray, lung: np.ndarray, *, in_place: bool = False
) -> np.ndarray:
    """Ground glass and consolidation only inside the lung; effusion wherever predicted.
    ``in_place`` changes ``infection`` itself (no copy of a scan's labels)."""
    out = infection if in_place else infection.copy()
    for plane, lung_plane in zip(
        out.reshape(-1, *out.shape[-2:]), lung.reshape(-1, *lung.shape[-2:]), strict=True
    ):
        plane[np.isin(plane, (GROUND_GLASS, CONSOLIDATION)) & (lung_plane == 0)] = 0
    return out


def severity_score(share: float) -> int:
    """0-5 from the share of a lung involved (see the module docstring); 0 below the floor."""
    if share < SEVERITY_FLOOR:
        return 0
    return 1 + sum(share > bound for bound in SEVERITY_BOUNDS)


def joint_counts(lung: np.ndarray, infection: np.ndarray) -> np.ndarray:
    """Pixels of each (lung label 0-2, infection class 0-3) pair, plane by plane:
    ``(planes, 3, 4)`` (a slice is one plane). Untyped infection (4) counts in column 3.
    Every figure of ``involvement``, ``zone_shares`` and the per-slice shares comes from
    these counts: one pass over a scan, not one per figure."""
    lung_planes = lung.reshape(-1, *lung.shape[-2:])
    infection_planes = infection.reshape(-1, *lung.shape[-2:])
    joint = np.zeros((lung_planes.shape[0], 3, 4), np.int64)
    for index, (lung_plane, infection_plane) in enumerate(
        zip(lung_planes, infection_planes, strict=True)
    ):
        pairs = lung_plane.astype(np.intp) * 4 + np.minimum(infection_plane, 3)
        joint[index] = np.bincount(pairs.ravel(), minlength=12).reshape(3, 4)
    return joint


def involvement(lung: np.ndarray, infection: np.ndarray) -> dict[str, object]:
    """Share of the right, left and both lungs covered by ground glass or consolidation,
    each lung's severity score (0-5), the total (0-10), and effusion in pixels."""
    return involvement_of(joint_counts(lung, infection).sum(axis=0))


def involvement_of(joint: np.ndarray) -> dict[str, object]:
    """``involvement`` from the ``(3, 4)`` counts of ``joint_counts`` (summed over planes)."""
    lesion_columns = [GROUND_GLASS, CONSOLIDATION]
    shares = {}
    for name, rows in (("right", [LUNG_RIGHT]), ("left", [LUNG_LEFT]), ("total", [1, 2])):
        area = int(joint[rows].sum())
        shares[name] = float(joint[rows][:, lesion_columns].sum() / area) if area else 0.0
    totals = joint.sum(axis=0)
    scores = {side: severity_score(shares[side]) for side in ("right", "left")}
    return {
        "share": {k: round(v, 4) for k, v in shares.items()},
        "severity": {**scores, "total": scores["right"] + scores["left"]},
        "ground_glass_px": int(totals[GROUND_GLASS]),
        "consolidation_px": int(totals[CONSOLIDATION]),
        "effusion_px": int(totals[PLEURAL_EFFUSION]),
    }


def zone_shares(joint: np.ndarray) -> dict[str, dict[str, float]]:
    """A volume's involvement per lung and zone, from its ``joint_counts``: each lung's
    slices from its lowest to its highest split in thirds by height (``upper``,
    ``middle``, ``lower``), and the share of that part of the lung with ground glass or
    consolidation."""
    lung_px = joint.sum(axis=2)  # (planes, lung label)
    lesion_px = joint[:, :, GROUND_GLASS] + joint[:, :, CONSOLIDATION]
    zones: dict[str, dict[str, float]] = {}
    for side, value in (("right", LUNG_RIGHT), ("left", LUNG_LEFT)):
        present = np.flatnonzero(lung_px[:, value])
        zones[side] = dict.fromkeys(ZONES, 0.0)
        if present.size == 0:
            continue
        # the array runs feet to head: the upper third has the highest slice indices
        edges = np.linspace(present[0], present[-1] + 1, 4)
        for zone, low, high in zip(ZONES[::-1], edges[:-1], edges[1:], strict=True):
            rows = slice(round(low), round(high))
            area = int(lung_px[rows, value].sum())
            zones[side][zone] = (
                round(float(lesion_px[rows, value].sum() / area), 4) if area else 0.0
            )
    return zones
