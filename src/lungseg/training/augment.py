"""Training augmentation: what users upload, simulated on top of the one pre-processing.

For each slice ``Augmenter`` draws, in this order:

1. a **rendering**, as an exporter would make a picture of the slice
   (``imaging.render``): HU slices stay HU (as DICOM input) or become a lung,
   soft-tissue or bone/wide window, a per-slice min-max with or without the
   scanner's padding, CLAHE (clip 2-10) or histogram equalisation after min-max;
   8-bit sources get CLAHE, equalisation or a min-max stretch on top; then gamma
   and JPEG at any quality;
2. a **crop** (tight crops around the chest, as screenshots are);
3. the deterministic pre-processing of the model's contract
   (``inference.preprocess.Preprocessing.prepare``), the same call inference makes;
4. **spatial** steps on the model square: one of the 8 flips/quarter turns, rotation,
   zoom, shift (MONAI), and noise. Labels follow every turn, so the right lung stays
   the right lung wherever it lies in the picture: sides come from anatomy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from monai.transforms import Compose, RandAffined, RandGaussianNoised
from PIL import Image

from lungseg.imaging import Intensity
from lungseg.imaging import render as rd
from lungseg.imaging.orientation import DIHEDRAL, apply_dihedral
from lungseg.inference.preprocess import Preprocessing, to_model_square
from lungseg.training.config import AugmentConfig

HuRendering = Callable[[np.ndarray, np.random.Generator], np.ndarray]

HU_RENDERINGS: dict[str, HuRendering] = {
    "lung_window": lambda hu, rng: rd.window(
        hu, rng.uniform(-750.0, -400.0), rng.uniform(1000.0, 2000.0)
    ),
    "soft_tissue": lambda hu, rng: rd.window(hu, rng.uniform(0.0, 80.0), rng.uniform(250.0, 600.0)),
    "bone_or_wide": lambda hu, rng: rd.window(
        hu, rng.uniform(0.0, 700.0), rng.uniform(1500.0, 4000.0)
    ),
    "min_max_padded": lambda hu, rng: rd.min_max(hu),
    "min_max": lambda hu, rng: rd.min_max(hu, without_padding=True),
    "clahe": lambda hu, rng: rd.clahe(
        rd.min_max(hu, without_padding=bool(rng.random() < 0.5)), rng.uniform(2.0, 10.0)
    ),
    "equalised": lambda hu, rng: rd.equalise(
        rd.min_max(hu, without_padding=bool(rng.random() < 0.5))
    ),
}
"""Random exporters of HU slices; weights in ``AugmentConfig.renderings``."""

DISPLAY_RENDERINGS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "clahe": lambda grey, rng: rd.clahe(grey, rng.uniform(2.0, 10.0)),
    "equalised": lambda grey, rng: rd.equalise(grey),
    "min_max": lambda grey, rng: rd.min_max(grey),
}
"""Random steps on top of 8-bit sources (their exporters already windowed them)."""


class Augmenter:
    """Random rendering, crop, pre-processing and spatial augmentation of one slice.

    Args:
        config: probabilities and ranges.
        preprocessing: the model's input contract (the deterministic steps).
        seed: seed of every random draw (reseed per data-loader worker with ``reseed``).
    """

    def __init__(self, config: AugmentConfig, preprocessing: Preprocessing, seed: int = 0) -> None:
        self.config = config
        self.preprocessing = preprocessing
        size = preprocessing.size
        zoom = (config.zoom[0] - 1.0, config.zoom[1] - 1.0)
        self.spatial = Compose(
            [
                RandAffined(
                    keys=("image", "label"),
                    prob=config.affine,
                    rotate_range=np.deg2rad(config.rotate_deg),
                    scale_range=(zoom, zoom),
                    translate_range=(config.shift * size, config.shift * size),
                    mode=("bilinear", "nearest"),
                    padding_mode="zeros",
                ),
                RandGaussianNoised(keys="image", prob=config.noise, std=0.03),
            ]
        )
        unknown = set(config.renderings) - {"hu", *HU_RENDERINGS}
        if unknown:
            raise ValueError(f"unknown renderings: {', '.join(sorted(unknown))}")
        names = list(config.renderings)
        weights = np.array([config.renderings[n] for n in names], dtype=float)
        self.rendering_names, self.rendering_weights = names, weights / weights.sum()
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.spatial.set_random_state(seed=seed % (2**32))

    def render(self, image: np.ndarray, intensity: Intensity) -> tuple[np.ndarray, Intensity]:
        """Step 1: the slice as some exporter saved it (HU stays HU for ``hu``)."""
        config, rng = self.config, self.rng
        if intensity is Intensity.HU:
            name = str(rng.choice(self.rendering_names, p=self.rendering_weights))
            if name == "hu":
                return image, intensity
            picture = HU_RENDERINGS[name](image, rng)
        else:
            picture = image.astype(np.uint8, copy=False)
            if rng.random() < config.display_rendering:
                names = list(DISPLAY_RENDERINGS)
                picture = DISPLAY_RENDERINGS[names[int(rng.integers(len(names)))]](picture, rng)
        if rng.random() < config.gamma:
            picture = rd.gamma(picture, float(rng.uniform(0.6, 1.6)))
        if rng.random() < config.jpeg:
            picture = rd.jpeg(picture, int(rng.integers(20, 96)))
        return picture, Intensity.DISPLAY

    def crop(self, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step 2: keep a random 65-100 % window of each side (a tight screenshot crop)."""
        if self.rng.random() >= self.config.crop:
            return image, labels
        rows, cols = image.shape
        height = int(rows * self.rng.uniform(0.65, 1.0))
        width = int(cols * self.rng.uniform(0.65, 1.0))
        top = int(self.rng.integers(0, rows - height + 1))
        left = int(self.rng.integers(0, cols - width + 1))
        window = (slice(top, top + height), slice(left, left + width))
        return image[window], labels[window]

    def __call__(
        self, image: np.ndarray, intensity: Intensity, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one slice.

        Args:
            image: ``(rows, cols)`` HU or 8-bit display values at the source's size.
            intensity: what ``image`` holds.
            labels: ``(rows, cols)`` uint8 class indices.

        Returns:
            float32 model input and uint8 labels, both ``(size, size)``.
        """
        picture, kind = self.render(image, intensity)
        picture, labels = self.crop(picture, labels)
        square, label_square = prepare_pair(self.preprocessing, picture, kind, labels)
        if self.rng.random() < self.config.dihedral:
            turns, flip = DIHEDRAL[int(self.rng.integers(len(DIHEDRAL)))]
            square = apply_dihedral(square, turns, flip)
            label_square = apply_dihedral(label_square, turns, flip)
        sample = self.spatial(
            {"image": square[np.newaxis], "label": label_square[np.newaxis].astype(np.float32)}
        )
        out = np.clip(np.asarray(sample["image"][0], dtype=np.float32), 0.0, 1.0)
        # nearest resampling keeps classes whole; rint guards against float round-off
        return out, np.rint(np.asarray(sample["label"][0])).astype(np.uint8)


def prepare_pair(
    preprocessing: Preprocessing, image: np.ndarray, intensity: Intensity, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A slice and its labels as the model sees them: the contract's deterministic steps
    for the image (exactly what inference runs) and the same padding and size for the labels."""
    square, _ = preprocessing.prepare(image, intensity)
    if labels.shape != image.shape:  # an exporter resized the picture
        labels = np.asarray(
            Image.fromarray(labels).resize(image.shape[::-1], Image.Resampling.NEAREST)
        )
    label_square, _ = to_model_square(labels, preprocessing.size, nearest=True)
    return square, label_square
