"""The exported lung model, run with onnxruntime (no torch needed to predict)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.errors import LungsegError
from lungseg.imaging import CTImage, Intensity, to_unit_range
from lungseg.imaging.body import body_region
from lungseg.inference.postprocess import clean_lung_mask
from lungseg.inference.preprocess import from_model_square, to_model_square

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "lung_unet.onnx"
"""The model trained by the project's own commands, shipped inside the package."""
SHIPPED_INFECTION_MODEL = SHIPPED_MODEL.with_name("infection_unet.onnx")
"""The COVID-19 infection model, used where it is shipped."""
LUNG_THRESHOLD = 0.5


class SegmentationModel:
    """An exported segmentation model (lung or infection) and its card, loaded once.

    Args:
        path: the ``.onnx`` file (its ``model_card.json`` or ``<stem>.json`` beside it
            is read too); the shipped model by default.
        threads: onnxruntime intra-op threads (0: onnxruntime decides).
    """

    def __init__(self, path: str | Path | None = None, *, threads: int = 0) -> None:
        import onnxruntime

        self.path = Path(path) if path is not None else SHIPPED_MODEL
        if not self.path.is_file():
            raise LungsegError(f"{self.path}: no such model file")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        # Idle onnxruntime threads would otherwise spin and take the cores from the
        # pre- and post-processing that runs between two model calls.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own exception types
            raise LungsegError(f"{self.path}: not a usable ONNX model: {error}") from error
        shape = self.session.get_inputs()[0].shape
        self.size = int(shape[-1])
        self.input_name = self.session.get_inputs()[0].name
        self.card = self._read_card()

    def _read_card(self) -> dict[str, Any]:
        for candidate in (self.path.with_suffix(".json"), self.path.parent / "model_card.json"):
            if candidate.is_file():
                return dict(json.loads(candidate.read_text()))
        return {}

    def probabilities(self, squares: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Class probabilities ``(n, classes, size, size)`` of inputs ``(n, size, size)`` in [0, 1]."""
        out = []
        for start in range(0, squares.shape[0], batch_size):
            batch = squares[start : start + batch_size, np.newaxis].astype(np.float32)
            out.append(self.session.run(None, {self.input_name: batch})[0])
        if not out:
            return np.zeros((0, len(self.classes), self.size, self.size), np.float32)
        return np.concatenate(out)

    def lung_probability(self, squares: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Lung probability ``(n, size, size)`` (channel 1 of a lung model)."""
        return self.probabilities(squares, batch_size)[:, 1]

    @property
    def classes(self) -> list[str]:
        return list(self.card.get("output", {}).get("classes", ["background", "lung"]))

    @property
    def task(self) -> str:
        return str(self.card.get("task", "lung"))


def segment_slices(
    model: SegmentationModel,
    images: list[np.ndarray],
    intensities: list[Intensity],
    *,
    postprocess: bool = True,
) -> list[np.ndarray]:
    """Binary lung masks of 2D slices, each at its own size.

    Each slice goes through the lung window (HU) or /255 (display), is padded
    square and resized for the model; the probability comes back to the slice's
    size and is thresholded at 0.5. With ``postprocess``, specks go, holes are
    filled and nothing outside the body is lung (``inference.postprocess``).
    """
    squares, placements = [], []
    for image, intensity in zip(images, intensities, strict=True):
        square, placement = to_model_square(to_unit_range(image, intensity), model.size)
        squares.append(square)
        placements.append(placement)
    if not squares:
        return []
    probabilities = model.lung_probability(np.stack(squares))
    masks = []
    for probability, placement, image, intensity in zip(
        probabilities, placements, images, intensities, strict=True
    ):
        mask = from_model_square(probability[np.newaxis], placement)[0] > LUNG_THRESHOLD
        masks.append(postprocess_slice(mask, image, intensity) if postprocess else mask)
    return masks


def postprocess_slice(mask: np.ndarray, image: np.ndarray, intensity: Intensity) -> np.ndarray:
    """A slice's raw lung mask cleaned: specks gone, holes filled, nothing outside the body."""
    return clean_lung_mask(mask, body_region(image, intensity))


def segment_image(
    model: SegmentationModel, image: CTImage, *, postprocess: bool = True
) -> np.ndarray:
    """Binary lung mask of a slice or volume (slice by slice), the shape of ``image.array``."""
    planes = list(image.slices())
    masks = segment_slices(model, planes, [image.intensity] * len(planes), postprocess=False)
    stack = np.stack(masks)
    if postprocess:
        regions = [body_region(plane, image.intensity) for plane in planes]
        body = np.stack(
            [
                r if r is not None else np.ones(p.shape, bool)
                for r, p in zip(regions, planes, strict=True)
            ]
        )
        stack = clean_lung_mask(stack, body)
    return stack if image.is_volume else stack[0]
