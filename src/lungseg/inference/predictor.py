"""The Predictor: the one way in for the CLI, the web app and anyone who imports lungseg.

    from lungseg.inference import Predictor
    predictor = Predictor()                      # the shipped model, loaded once
    result = predictor.predict("slice.png")      # or a DICOM file/folder, a NIfTI volume,
                                                 # a numpy array (spacing=...), a nibabel image
    save_prediction(result, "out/", "slice")     # the mask, overlay (and infection) files
    result.lung                                  # 0 background, 1 right lung, 2 left lung
    result.measures                              # right/left/total in mm² (slice) or mL (volume)
    result.check                                 # ok / review / refused, and why (inference.check)

Right and left are the patient's, told apart by the model from anatomy (heart,
aorta, liver), so a mirrored, upside-down or turned photo is labelled right. Where
the file has an orientation (DICOM, NIfTI: volumes come in the radiological view)
and the model's sides disagree with it, the file's sides are kept, with a note.
"""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np

from lungseg import __version__
from lungseg.core.masks import lung_measures, side_agreement, split_left_right
from lungseg.errors import LungsegError
from lungseg.imaging import CTImage, Intensity, read_image
from lungseg.imaging.orientation import DIHEDRAL, describe_turn
from lungseg.imaging.readers import (
    DEFAULT_LIMITS,
    ReadLimits,
    image_from_array,
    image_from_nifti,
)
from lungseg.inference.check import check_prediction, refusal_before_segmenting
from lungseg.inference.infection import (
    involvement_of,
    joint_counts,
    restrict_to_lung,
    zone_shares,
)
from lungseg.inference.model import (
    SHIPPED_INFECTION_MODEL,
    SHIPPED_MODEL,
    Progress,
    SegmentationModel,
    TurnReading,
    segment_image,
)
from lungseg.inference.result import Check, ModelInfo, Prediction, SliceLung

SIDE_AGREEMENT = 0.5
"""Below this share of lung pixels on the file's side, the model's sides are overruled."""


class Predictor:
    """Loads the model once; segments slices and volumes of any readable kind.

    Args:
        model: an ONNX model path; by default the shipped one-pass network (lungs and
            infection), or with ``infection`` off the shipped lung network.
        infection: give COVID-19 findings, where the network has an infection head
            (its one pass gives them; a lung network gives none).
        threads: onnxruntime threads (0: all cores).
    """

    def __init__(
        self, model: str | Path | None = None, *, infection: bool = True, threads: int = 0
    ) -> None:
        if model is None:  # the one-pass network, or the lung network without infection
            wanted = SHIPPED_INFECTION_MODEL if infection else SHIPPED_MODEL
            model = wanted if wanted.is_file() else SHIPPED_MODEL
        self.model = SegmentationModel(model, threads=threads)
        if "lung" not in self.model.heads:
            raise LungsegError(
                f"{model}: a network of {self.model.task!r} alone; lungseg predicts with one "
                "that finds the lungs (and COVID-19 infection in the same pass)"
            )
        self.infection_head = infection and self.model.has_infection_head
        """Infection comes from the one pass, where the network has an infection head."""

    def _infection_description(self) -> str:
        """What the infection findings come from, for the page and the JSON."""
        trained = self.model.card.description or "a COVID-19 infection model"
        return (
            f"{trained}. COVID-19 findings, not a diagnosis: other disease that looks alike "
            "(a tumour, fibrosis, oedema) may be marked too."
        )

    def model_info(self) -> ModelInfo:
        """Which model answers: its card's name and date, the ONNX file's hash."""
        card = self.model.card
        return ModelInfo(
            name=card.name or self.model.path.name,
            created=card.created,
            sha256=card.sha256,
            lungseg_version=__version__,
        )

    def predict(
        self,
        source: str | Path | np.ndarray | nib.Nifti1Image,
        *,
        spacing: tuple[float, ...] | None = None,
        intensity: Intensity | None = None,
        limits: ReadLimits = DEFAULT_LIMITS,
        progress: Progress | None = None,
    ) -> Prediction:
        """Read and segment a file or DICOM folder, a numpy array or a nibabel image.

        Args:
            source: a path; a ``(rows, cols)`` slice or ``(slices, rows, cols)`` volume
                array, taken as shown (HU or display values, classified as files'
                are); or a nibabel NIfTI image in memory.
            spacing: an array's pixel size in mm, ``(row, col)`` or ``(slice, row, col)``
                (areas in mm², volumes in mL; without it, pixels).
            intensity: force what an array's values mean.
            limits: the largest input accepted.
            progress: called with (slices done, slices in all) as work goes on.

        Raises:
            ImageReadError: the input cannot be read (``TooLargeError``: over ``limits``).
        """
        started = time.perf_counter()
        if isinstance(source, np.ndarray):
            image = image_from_array(source, spacing=spacing, intensity=intensity, limits=limits)
        elif isinstance(source, nib.Nifti1Image | nib.Nifti2Image):
            image = image_from_nifti(source, limits=limits)
        else:
            image = read_image(source, limits=limits)
        return self.segment(image, started=started, progress=progress)

    def segment(
        self, image: CTImage, *, started: float | None = None, progress: Progress | None = None
    ) -> Prediction:
        """Segment an image already read; slices and volumes alike.

        ``progress(done, total)`` counts model passes over slices (lungs, then infection);
        it may raise to stop the work.
        """
        started = time.perf_counter() if started is None else started
        refused = refusal_before_segmenting(image)
        if refused:  # no model run: an empty answer that says why
            return self._refused(image, Check(status="refused", reasons=[refused]), started)
        count = image.array.shape[0] if image.is_volume else 1
        infection = (
            np.zeros((count, *image.array.shape[-2:]), np.uint8) if self.infection_head else None
        )
        readings: list[TurnReading | None] = []
        lung = segment_image(
            self.model, image, progress=progress, infection=infection, readings=readings
        )
        notes = list(image.notes)
        reading = readings[0] if readings else None
        turn = 0 if reading is None else reading.turn
        if turn:
            notes.append(
                f"the picture looks {describe_turn(*DIHEDRAL[turn])} (from the anatomy); it "
                "was segmented upright and the masks turned back onto it"
            )
        if len(image.geometry.orientation) == 3 and lung.any():  # axis codes: a known view
            by_position = split_left_right(lung)
            agreement = side_agreement(lung, by_position)
            if agreement < SIDE_AGREEMENT:
                lung = by_position
                notes.append(
                    f"the model's right/left from anatomy disagree with the file's orientation "
                    f"({agreement:.0%} of lung pixels agree); sides from the file kept"
                )
        spacing = image.geometry.spacing
        measures = lung_measures(lung, spacing)
        unit = "px" if spacing is None else ("mL" if image.is_volume else "mm2")
        prediction = Prediction(image, lung, measures, unit, 0.0, notes)
        if image.is_volume:
            in_plane = spacing[1:] if spacing else None
            z_mm = image.geometry.slice_z(count)
            instances = image.geometry.instance_numbers
            prediction.per_slice = [
                SliceLung(
                    index=index,
                    number=count - index,  # the array runs feet to head
                    instance=instances[index] if instances else None,
                    z_mm=None if z_mm is None else round(z_mm[index], 2),
                    **{k: round(v, 1) for k, v in lung_measures(plane, in_plane).items()},
                )
                for index, plane in enumerate(lung)
            ]
        if infection is not None:
            prediction.infection = restrict_to_lung(
                infection.reshape(lung.shape), lung, in_place=True
            )
            joint = joint_counts(lung, prediction.infection)  # one pass for every figure
            prediction.involvement = involvement_of(joint.sum(axis=0))
            prediction.involvement["trained_on"] = self._infection_description()
            if image.is_volume and spacing is not None:  # lesion volumes in mL
                voxel_ml = float(np.prod(spacing)) / 1000.0
                for name in ("ground_glass", "consolidation", "effusion"):
                    pixels = float(prediction.involvement[f"{name}_px"])  # type: ignore[arg-type]
                    prediction.involvement[f"{name}_ml"] = round(pixels * voxel_ml, 2)
                shares = prediction.involvement["share"]
                prediction.involvement["involved_ml"] = {
                    side: round(float(shares[side]) * measures[side], 2)  # type: ignore[index]
                    for side in ("right", "left", "total")
                }
            if image.is_volume:  # by zone, and slice by slice for a viewer's slice slider
                prediction.involvement["zones"] = zone_shares(joint)
                prediction.involvement["per_slice"] = [
                    involvement_of(plane)["share"] for plane in joint
                ]
        prediction.check = check_prediction(prediction, reading)
        prediction.seconds = time.perf_counter() - started
        return prediction

    def _refused(self, image: CTImage, check: Check, started: float) -> Prediction:
        """An input refused as not an axial chest CT: no mask, no findings, the reason."""
        lung = np.zeros(image.array.shape, np.uint8)
        unit = "px" if image.geometry.spacing is None else ("mL" if image.is_volume else "mm2")
        measures = lung_measures(lung, image.geometry.spacing)
        notes = [*image.notes, f"refused: {check.reasons[0]}"]
        return Prediction(
            image, lung, measures, unit, time.perf_counter() - started, notes, check=check
        )
