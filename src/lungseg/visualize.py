"""Draw masks on images (numpy only: used by reports, predictions and the web app)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

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
from lungseg.core.morphology import label_edges

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
LABEL_NAMES: dict[str, dict[int, str]] = {
    "lung": {LUNG_RIGHT: "right lung", LUNG_LEFT: "left lung", LUNG_SIDE_UNKNOWN: "lung"},
    "infection": {
        GROUND_GLASS: "ground glass",
        CONSOLIDATION: "consolidation",
        PLEURAL_EFFUSION: "effusion",
        INFECTION_UNTYPED: "infection",
    },
}


def colour_table() -> dict[str, dict[str, dict[str, object]]]:
    """Every mask's labels with their names and colours: the one table the overlays, the
    palette PNGs, the DICOM-SEG and the web page (``GET /api/v1/colours``) draw with."""
    colours = {"lung": LUNG_COLOURS, "infection": INFECTION_COLOURS}
    return {
        mask: {
            str(label): {"name": LABEL_NAMES[mask][label], "rgb": list(rgb)}
            for label, rgb in table.items()
        }
        for mask, table in colours.items()
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
        infection: infection labels (``GROUND_GLASS``... ``INFECTION_UNTYPED``).
        alpha: opacity of the fill.
        outline: draw a one-pixel outline of each label in full colour.

    Returns:
        ``(rows, cols, 3)`` uint8 RGB: each lung pixel is its grey blended with its
        lung's colour, an infected one blended again with the lesion's colour; the
        lungs' outlines in their colour (blended with a lesion they cross), the
        lesions' outlines in theirs.
    """
    weight = round(alpha * 256)
    lungs = LUNG_COLOURS if lung is not None else {}
    lesions = INFECTION_COLOURS if infection is not None else {}
    shape = grey.shape
    lung_code = _layer_codes(lung, lungs, shape)
    lesion_code = _layer_codes(infection, lesions, shape)
    if outline:  # an outline pixel is a layer of its own: n + k for the k-th colour
        for code, labels, colours in ((lung_code, lung, lungs), (lesion_code, infection, lesions)):
            if labels is not None and colours:
                code += (label_edges(labels) & (code != 0)).view(np.uint8) * np.uint8(len(colours))
    # every colour a pixel can end with, by (lung layer, lesion layer, grey), looked up at once
    table = _tint_table(weight, tuple(lungs.values()), tuple(lesions.values()))
    # the row of each pixel's colour: 7 x 9 layers x 256 greys = 16128, so uint16 holds it
    assert len(table) <= 2**16, "more colours than a 16-bit index reaches"
    index = lung_code.astype(np.uint16)
    index *= 2 * len(lesions) + 1
    index += lesion_code
    index <<= 8
    index += grey
    return np.take(table, index, axis=0)  # (a gather by np.take: several times faster here)


def _layer_codes(
    labels: np.ndarray | None, colours: dict[int, tuple[int, int, int]], shape: tuple[int, ...]
) -> np.ndarray:
    """Each pixel's layer: 0 for none, ``n`` for the n-th coloured label."""
    if labels is None or not colours:
        return np.zeros(shape, np.uint8)
    codes = np.zeros(256, np.uint8)
    for number, label in enumerate(colours, start=1):
        codes[label] = number
    if labels.dtype != np.uint8:
        labels = np.clip(labels, 0, 255).astype(np.uint8)
    return np.take(codes, labels)


def _blend_each(
    pixels: np.ndarray, colours: Iterable[tuple[int, int, int]], weight: int
) -> np.ndarray:
    """``pixels`` (uint16 ``(..., 3)``) as they are, then blended with each colour in turn:
    ``(256 - weight) * pixel + weight * colour``, / 256 (integers), stacked first."""
    blends = [pixels] + [
        (pixels * (256 - weight) + np.asarray(colour, np.uint16) * weight) >> 8
        for colour in colours
    ]
    return np.stack(blends).astype(np.uint16)


@lru_cache(maxsize=16)
def _tint_table(
    weight: int,
    lung_colours: tuple[tuple[int, int, int], ...],
    lesion_colours: tuple[tuple[int, int, int], ...],
) -> np.ndarray:
    """``(2 lung colours + 1) * (2 lesion colours + 1) * 256`` RGB rows, by lung layer
    (0 none, 1..n filled, n+1..2n outline), lesion layer (likewise) and grey: the grey
    blended with its lung's colour, then with its lesion's; a lung outline in its
    colour (blended with a lesion it crosses); a lesion outline in its colour."""
    greys = np.repeat(np.arange(256, dtype=np.uint16)[:, np.newaxis], 3, axis=1)
    filled = [
        _blend_each(tinted, lesion_colours, weight)
        for tinted in _blend_each(greys, lung_colours, weight)
    ]  # [lung layer][lesion layer, grey]
    outlined = [
        _blend_each(
            np.broadcast_to(np.asarray(colour, np.uint16), (256, 3)), lesion_colours, weight
        )
        for colour in lung_colours
    ]
    lesion_edges = [np.broadcast_to(np.asarray(c, np.uint16), (256, 3)) for c in lesion_colours]
    table = np.stack(
        [
            np.concatenate([layers, np.stack(lesion_edges)]) if lesion_edges else layers
            for layers in filled + outlined
        ]
    )
    return table.reshape(-1, 3).astype(np.uint8)


LEGEND_NAMES = {
    mask: tuple((colours[label], LABEL_NAMES[mask][label]) for label in labels)
    for mask, colours, labels in (
        ("lung", LUNG_COLOURS, (LUNG_RIGHT, LUNG_LEFT)),
        ("infection", INFECTION_COLOURS, (GROUND_GLASS, CONSOLIDATION, PLEURAL_EFFUSION)),
    )
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
    too), a colour legend in the corner where it hides least of the body and none of the
    lungs (``_legend_corner``), and an optional caption (a slice number) in the top-left. Returns a new array; ``rgb`` is left as it is.

    White letters outlined in black; each text is drawn once per size and kept
    (``_text_masks``), then blended in, which costs a fraction of drawing it anew."""
    picture = rgb.copy()
    rows, cols = lung.shape
    size = max(9, min(rows, cols) // 22)
    for label, letter in ((LUNG_RIGHT, "R"), (LUNG_LEFT, "L")):
        centre = region_centre(lung == label)
        if centre is not None:
            _put_text(picture, centre, letter, size, centred=True)
    if caption:
        _put_text(picture, (size // 2, size // 2), caption, size)
    if legend:
        entries = list(LEGEND_NAMES["lung"]) + (
            list(LEGEND_NAMES["infection"]) if infection else []
        )
        line = size + size // 3
        height = line * len(entries) + size // 3
        width = (
            size // 2
            + size
            + size // 3
            + max(_text_masks(name, size, False)[0].shape[1] for _, name in entries)
        )
        top, left = _legend_corner(rgb, lung, height, width, top_left_free=not caption)
        for number, (colour, name) in enumerate(entries):
            y = top + size // 3 + number * line
            x = left + size // 2
            picture[max(y, 0) : max(y + size, 0), max(x, 0) : max(x + size, 0)] = colour
            _put_text(picture, (x + size + size // 3, y), name, size)
    return picture


def _legend_corner(
    rgb: np.ndarray, lung: np.ndarray, height: int, width: int, *, top_left_free: bool
) -> tuple[int, int]:
    """The top-left pixel of the corner where the legend hides least: the darkest
    (air, not the body), never over lung; bottom-left where corners tie."""
    rows, cols = lung.shape
    height, width = min(height, rows), min(width, cols)
    corners = [(rows - height, 0), (rows - height, cols - width), (0, cols - width)]
    if top_left_free:  # else the caption is there
        corners.append((0, 0))

    def cost(corner: tuple[int, int]) -> float:
        box = (slice(corner[0], corner[0] + height), slice(corner[1], corner[1] + width))
        return float(rgb[box].mean()) + 255.0 * float((lung[box] != 0).mean())

    return min(corners, key=cost)


def region_centre(mask: np.ndarray) -> tuple[int, int] | None:
    """The (x, y) centre of a 2D mask's pixels, rounded; ``None`` for an empty mask.
    From its row and column counts, which cost a fraction of listing its pixels."""
    by_row, by_col = mask.sum(axis=1), mask.sum(axis=0)
    total = int(by_row.sum())
    if not total:
        return None
    rows, cols = mask.shape
    return (
        round(float(by_col @ np.arange(cols)) / total),
        round(float(by_row @ np.arange(rows)) / total),
    )


@lru_cache(maxsize=128)
def _text_masks(text: str, size: int, centred: bool) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``text`` in the default font at ``size`` px: the coverage of its black outline
    and of its white letters (uint8), and the offset of their top-left corner from the
    anchor (the text's centre, or its top-left)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    stroke = max(1, size // 8)
    anchor = "mm" if centred else "la"
    left, top, right, bottom = (
        round(edge) for edge in font.getbbox(text, stroke_width=stroke, anchor=anchor)
    )
    masks = []
    for width in (stroke, 0):
        mask = Image.new("L", (right - left, bottom - top), 0)
        ImageDraw.Draw(mask).text(
            (-left, -top),
            text,
            font=font,
            anchor=anchor,
            fill=255,
            stroke_width=width,
            stroke_fill=255,
        )
        masks.append(np.asarray(mask))
    return masks[0], masks[1], int(left), int(top)


def _put_text(
    picture: np.ndarray, at: tuple[int, int], text: str, size: int, *, centred: bool = False
) -> None:
    """Blend outlined white ``text`` into ``picture`` (in place) at ``at`` (x, y),
    cut where it runs off the picture."""
    outline, letters, dx, dy = _text_masks(text, size, centred)
    x, y = at[0] + dx, at[1] + dy
    rows, cols = picture.shape[:2]
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + outline.shape[0], rows), min(x + outline.shape[1], cols)
    if top >= bottom or left >= right:
        return
    region = picture[top:bottom, left:right].astype(np.uint16)
    cut = (slice(top - y, bottom - y), slice(left - x, right - x))
    for mask, value in ((outline, 0), (letters, 255)):
        weight = mask[cut].astype(np.uint16)[..., np.newaxis]
        region = (region * (255 - weight) + value * weight + 127) // 255
    picture[top:bottom, left:right] = region.astype(np.uint8)


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
