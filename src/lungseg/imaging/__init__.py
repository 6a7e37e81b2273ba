"""Read CT in any common form; arrays always come with geometry and intensity kind."""

from __future__ import annotations

from lungseg.imaging.intensity import HU_WINDOW, to_display, to_unit_range
from lungseg.imaging.readers import read_image, read_mask
from lungseg.imaging.types import CTImage, Geometry, Intensity

__all__ = [
    "HU_WINDOW",
    "CTImage",
    "Geometry",
    "Intensity",
    "read_image",
    "read_mask",
    "to_display",
    "to_unit_range",
]
