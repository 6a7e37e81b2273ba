"""Real slices the tests share (they need ../shared/data: take the ``shared_data``
fixture first, which skips where it is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lungseg.imaging import read_image
from lungseg.inference.model import SegmentationModel


def one_slice_of_each_source(shared_data: Path, model: SegmentationModel) -> np.ndarray:
    """A finding-lungs (HU), a MedSeg and a covid19-ct-seg-clahe slice, as ``model``'s
    inputs ``(3, size, size)``."""
    files = [
        "finding-lungs-ct/2d_images/ID_0008_Z_0065.tif",
        "medseg-covid-98/images/medseg_005.png",
        "covid19-ct-seg-clahe/images/ma2020_p5_0552.png",
    ]
    images = [read_image(shared_data / f) for f in files]
    squares, _ = model.prepare([i.array for i in images], [i.intensity for i in images])
    return squares
