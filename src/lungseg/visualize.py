"""Draw masks on images (numpy only: used by reports, predictions and the web app)."""

from __future__ import annotations

import numpy as np

from lungseg.core.labels import (
    CONSOLIDATION,
    GROUND_GLASS,
    INFECTION_UNTYPED,
    LUNG_LEFT,
    LUNG_RIGHT,
    LUNG_SIDE_UNKNOWN,
    PLEURAL_EFFUSION,
)
from lungseg.core.morphology import outline as region_outline

LUNG_COLOURS: dict[int, tuple[int, int, int]] = {
    LUNG_RIGHT: (230, 75, 60),  # right lung: red
    LUNG_LEFT: (50, 130, 230),  # left lung: blue
    LUNG_SIDE_UNKNOWN: (60, 200, 90),  # lung, side unknown: green
}
INFECTION_COLOURS: dict[int, tuple[int, int, int]] = {
    GROUND_GLASS: (250, 210, 40),  # yellow
    CONSOLIDATION: (245, 130, 30),  # orange
    PLEURAL_EFFUSION: (170, 80, 200),  # purple
    INFECTION_UNTYPED: (250, 210, 40),
}


def overlay(
    grey: np.ndarray,
    lung: np.ndarray | None = None,
    infection: np.ndarray | None = None,
    *,
    alpha: float = 0.4,
    outline: bool = True,
) -> np.ndarray:
    """Colour lung labels (and infection) over an 8-bit greyscale slice.

    Args:
        grey: ``(rows, cols)`` uint8 display image.
        lung: lung labels (``LUNG_RIGHT``, ``LUNG_LEFT``, ``LUNG_SIDE_UNKNOWN``).
        infection: non-zero where infected.
        alpha: opacity of the fill.
        outline: draw a one-pixel outline of each label in full colour.

    Returns:
        ``(rows, cols, 3)`` uint8 RGB.
    """
    rgb = np.repeat(grey[..., np.newaxis], 3, axis=2)
    layers: list[tuple[np.ndarray, tuple[int, int, int]]] = []
    if lung is not None:
        layers += [(lung == label, colour) for label, colour in LUNG_COLOURS.items()]
    if infection is not None:
        layers += [(infection == label, colour) for label, colour in INFECTION_COLOURS.items()]
    weight = round(alpha * 256)
    for region, colour in layers:
        if not region.any():
            continue
        # Integer blend of the region's pixels only: (256 - w) * pixel + w * colour, / 256.
        pixels = rgb[region].astype(np.uint16)
        tint = np.asarray(colour, np.uint16) * weight
        rgb[region] = ((pixels * (256 - weight) + tint) >> 8).astype(np.uint8)
        if outline:
            rgb[region_outline(region)] = colour
    return rgb


LEGEND_NAMES = {
    "lung": ((LUNG_COLOURS[LUNG_RIGHT], "right lung"), (LUNG_COLOURS[LUNG_LEFT], "left lung")),
    "infection": (
        (INFECTION_COLOURS[GROUND_GLASS], "ground glass"),
        (INFECTION_COLOURS[CONSOLIDATION], "consolidation"),
        (INFECTION_COLOURS[PLEURAL_EFFUSION], "effusion"),
    ),
}


def annotate(
    rgb: np.ndarray,
    lung: np.ndarray,
    *,
    infection: bool = False,
    caption: str | None = None,
    legend: bool = True,
) -> np.ndarray:
    """An overlay with what a reader needs to read it: "R" and "L" on the patient's
    right and left lung (at each lung's centre, so they are right on a mirrored photo
    too), a colour legend in the bottom-left corner, and an optional caption (a slice
    number) in the top-left. Returns a new array; ``rgb`` is left as it is."""
    from PIL import Image, ImageDraw, ImageFont

    rows, cols = lung.shape
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    size = max(9, min(rows, cols) // 22)
    font = ImageFont.load_default(size=size)
    outlined = {
        "fill": (255, 255, 255),
        "stroke_width": max(1, size // 8),
        "stroke_fill": (0, 0, 0),
    }
    for label, letter in ((LUNG_RIGHT, "R"), (LUNG_LEFT, "L")):
        where = np.nonzero(lung == label)
        if where[0].size:
            centre = (float(where[1].mean()), float(where[0].mean()))
            draw.text(centre, letter, font=font, anchor="mm", **outlined)
    if caption:
        draw.text((size // 2, size // 2), caption, font=font, **outlined)
    if legend:
        entries = list(LEGEND_NAMES["lung"]) + (
            list(LEGEND_NAMES["infection"]) if infection else []
        )
        line = size + size // 3
        top = rows - line * len(entries) - size // 3
        for number, (colour, name) in enumerate(entries):
            y = top + number * line
            draw.rectangle((size // 2, y, size // 2 + size - 1, y + size - 1), fill=colour)
            draw.text((size // 2 + size + size // 3, y), name, font=font, **outlined)
    return np.asarray(image)


def grid(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    """Equal-sized RGB tiles in rows of ``columns``, the last row filled with black."""
    if not tiles:
        raise ValueError("a grid needs at least one tile")
    tiles = list(tiles)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)


def montage(
    slices: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    captions: list[str],
    *,
    tile: int = 256,
    columns: int = 4,
) -> np.ndarray:
    """Overlays of slices, each given as (display values, lung labels, infection labels
    or None), ``tile`` pixels wide with R/L and its caption; the first carries the colour
    legend. One grid for the scans ``lungseg predict`` writes and the reports' levels."""
    from PIL import Image

    tiles = []
    size = (tile, tile)
    for number, ((grey, lung, infection), caption) in enumerate(zip(slices, captions, strict=True)):
        picture = overlay(grey, lung, infection)
        small = np.asarray(Image.fromarray(picture).resize(size, Image.Resampling.BILINEAR))
        labels = np.asarray(Image.fromarray(lung).resize(size, Image.Resampling.NEAREST))
        tiles.append(
            annotate(
                small,
                labels,
                infection=infection is not None,
                caption=caption,
                legend=number == 0,
            )
        )
    return grid(tiles, columns)


def every_level(grey: np.ndarray, lung: np.ndarray, *, tile: int = 160) -> np.ndarray:
    """Every slice of a volume with its lung labels, 8 to a row, numbered in stored order."""
    count = grey.shape[0]
    slices: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = [
        (grey[i], lung[i], None) for i in range(count)
    ]
    captions = [f"slice {i + 1}/{count}" for i in range(count)]
    return montage(slices, captions, tile=tile, columns=8)
