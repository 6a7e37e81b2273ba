"""The overlay's colours, against the plain per-layer rule it computes by table."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lungseg.visualize import INFECTION_COLOURS, LUNG_COLOURS, annotate, overlay, region_centre


def region_outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (or on the image edge)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    inner[0, :] = inner[-1, :] = False
    inner[:, 0] = inner[:, -1] = False
    return mask & ~inner


def layer_by_layer(grey, lung, infection, alpha, outline):
    """Each lung colour, then each lesion colour, blended over its pixels in turn, its
    outline drawn in full colour right after."""
    rgb = np.repeat(grey[..., np.newaxis], 3, axis=2).astype(np.int64)
    weight = round(alpha * 256)
    layers = []
    if lung is not None:
        layers += [(lung == label, colour) for label, colour in LUNG_COLOURS.items()]
    if infection is not None:
        layers += [(infection == label, colour) for label, colour in INFECTION_COLOURS.items()]
    for region, colour in layers:
        rgb[region] = (rgb[region] * (256 - weight) + np.asarray(colour) * weight) >> 8
        if outline:
            rgb[region_outline(region)] = colour
    return rgb.astype(np.uint8)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 24),
    cols=st.integers(1, 24),
    seed=st.integers(0, 2**32 - 1),
    with_lung=st.booleans(),
    with_infection=st.booleans(),
    alpha=st.sampled_from([0.25, 0.4, 0.6]),
    outline=st.booleans(),
)
def test_the_overlay_blends_lungs_then_lesions_and_outlines_each(
    rows, cols, seed, with_lung, with_infection, alpha, outline
) -> None:
    rng = np.random.default_rng(seed)
    grey = rng.integers(0, 256, (rows, cols), dtype=np.uint8)
    lung = rng.integers(0, 5, (rows, cols)).astype(np.uint8) if with_lung else None
    infection = rng.integers(0, 6, (rows, cols)).astype(np.uint8) if with_infection else None
    expected = layer_by_layer(grey, lung, infection, alpha, outline)
    assert np.array_equal(overlay(grey, lung, infection, alpha=alpha, outline=outline), expected)


def test_annotations_stay_inside_a_tiny_picture_and_leave_the_input_alone() -> None:
    grey = np.full((12, 15), 90, np.uint8)
    lung = np.zeros((12, 15), np.uint8)
    lung[2:10, 1:6], lung[2:10, 9:14] = 1, 2
    rgb = overlay(grey, lung)
    before = rgb.copy()
    annotated = annotate(rgb, lung, infection=True, caption="slice 1/1")
    assert annotated.shape == rgb.shape
    assert np.array_equal(rgb, before)
    assert not np.array_equal(annotated, rgb)  # letters and legend were drawn


def test_the_legend_goes_where_it_hides_least_of_the_body() -> None:
    """Air in one corner only (top right): the legend goes there, not over the body in the
    bottom-left where it was always drawn; over lungs it never goes while a corner is free."""
    grey = np.full((200, 200), 160, np.uint8)  # body everywhere...
    grey[:70, 120:] = 0  # ...but air at the top right
    lung = np.zeros((200, 200), np.uint8)
    rgb = overlay(grey, lung)
    drawn = annotate(rgb, lung) != annotate(rgb, lung, legend=False)  # the legend alone
    assert drawn[:70, 120:].any() and not drawn[100:, :100].any()
    body = np.full((200, 200), 160, np.uint8)  # no air at all: the corner without lung
    lung[:, :100] = 1  # the right lung fills the left half
    rgb = overlay(body, lung)
    drawn = annotate(rgb, lung) != annotate(rgb, lung, legend=False)
    assert not drawn[:, :100].any() and drawn[:, 100:].any()


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 300), cols=st.integers(1, 300), share=st.floats(0, 1), seed=st.integers(0)
)
def test_a_regions_centre_is_the_mean_of_its_pixels(rows, cols, share, seed) -> None:
    mask = np.random.default_rng(seed).random((rows, cols)) < share
    where = np.nonzero(mask)
    expected = (
        (round(float(where[1].mean())), round(float(where[0].mean()))) if where[0].size else None
    )
    assert region_centre(mask) == expected
