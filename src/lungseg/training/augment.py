"""Training augmentation: what users upload, simulated.

Users send slices transposed or mirrored (NIfTI exports), windowed differently,
saved as 8-bit PNG or compressed JPEG (the original's example input was a
min-max normalised JPEG), noisy, and with a wider or narrower field of view.
``Augmenter`` draws each of these at random; the spatial and noise steps are
MONAI transforms, the rest are small numpy steps MONAI does not have.
"""

from __future__ import annotations

import io

import numpy as np
from monai.transforms import Compose, RandAdjustContrastd, RandAffined, RandGaussianNoised
from PIL import Image

from lungseg.imaging import Intensity, to_unit_range
from lungseg.imaging.orientation import DIHEDRAL, apply_dihedral
from lungseg.training.config import AugmentConfig


class Augmenter:
    """Random augmentation of one ``(size, size)`` slice and its mask.

    Args:
        config: probabilities and ranges.
        size: the square side (for shift ranges).
        seed: seed of every random draw (reseed per data-loader worker with ``reseed``).
    """

    def __init__(self, config: AugmentConfig, size: int, seed: int = 0) -> None:
        self.config = config
        self.spatial = Compose(
            [
                RandAffined(
                    keys=("image", "label"),
                    prob=config.affine,
                    rotate_range=np.deg2rad(config.rotate_deg),
                    scale_range=(config.zoom[1] - 1.0, config.zoom[1] - 1.0),
                    translate_range=(config.shift * size, config.shift * size),
                    mode=("bilinear", "nearest"),
                    padding_mode="zeros",
                ),
                RandAdjustContrastd(keys="image", prob=config.contrast, gamma=(0.7, 1.5)),
                RandGaussianNoised(keys="image", prob=config.noise, std=0.03),
            ]
        )
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.spatial.set_random_state(seed=seed % (2**32))

    def __call__(
        self, raw: np.ndarray, intensity: Intensity, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one slice.

        Args:
            raw: ``(size, size)`` HU or display values (padded and resized).
            intensity: what ``raw`` holds.
            mask: ``(size, size)`` uint8 class indices (0/1 for lung).

        Returns:
            float32 image in [0, 1] and uint8 mask, both ``(size, size)``.
        """
        config, rng = self.config, self.rng
        image = self._window(raw, intensity)
        if rng.random() < config.quantise:
            image = np.round(image * 255.0) / 255.0
        if rng.random() < config.jpeg:
            image = jpeg_roundtrip(image, int(rng.integers(30, 96)))
        if rng.random() < config.dihedral:
            turns, flip = DIHEDRAL[int(rng.integers(len(DIHEDRAL)))]
            image, mask = apply_dihedral(image, turns, flip), apply_dihedral(mask, turns, flip)
        sample = self.spatial(
            {"image": image[np.newaxis], "label": mask[np.newaxis].astype(np.float32)}
        )
        image = np.clip(np.asarray(sample["image"][0], dtype=np.float32), 0.0, 1.0)
        mask = np.rint(np.asarray(sample["label"][0])).astype(
            np.uint8
        )  # nearest: classes stay whole
        return image, mask

    def _window(self, raw: np.ndarray, intensity: Intensity) -> np.ndarray:
        if intensity is Intensity.HU and self.rng.random() < self.config.window:
            low = float(self.rng.uniform(-1400.0, -1000.0))
            high = float(self.rng.uniform(-200.0, 600.0))
            return np.clip((raw - low) / (high - low), 0.0, 1.0).astype(np.float32)
        unit = to_unit_range(raw, intensity)
        if intensity is Intensity.DISPLAY and self.rng.random() < self.config.display_window:
            low = float(self.rng.uniform(-0.15, 0.15))
            high = float(self.rng.uniform(0.8, 1.15))
            return np.clip((unit - low) / (high - low), 0.0, 1.0).astype(np.float32)
        return unit


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Save a [0, 1] image as an 8-bit JPEG and read it back (as a user's upload would be)."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255.0).astype(np.uint8)).save(
        buffer, format="JPEG", quality=quality
    )
    buffer.seek(0)
    return np.asarray(Image.open(buffer), dtype=np.float32) / 255.0
