"""When not to trust an answer: a check on every prediction.

``status`` is ``ok``, ``review`` (a mask was made, but something in it or in the way
the picture was read gives reason to look before using the numbers) or ``refused``
(the input is not an axial chest CT as far as lungseg can tell: no mask is given).
``reasons`` says why, one short sentence each. The rules look at the picture, the
file and the model's own outputs, never at the file name:

refused
    the file says it is something else (a colour photograph, a DICOM radiograph or MR
    image); a picture of one value.
review
    a photo in which the orientation head finds no consistent top, bottom, right or left
    (``NOT_AXIAL_TOP``, and the picture and its mirror image read alike: a radiograph, a
    coronal reformat, a grey photograph, or a real slice the model cannot place); the
    head unsure which way a photo is turned, or reading the picture and its mirror
    image alike (right and left may be swapped); small lungs (an apex or base level,
    where answers are least sure); no lung found; one lung much smaller than the other
    on a full-size slice or scan; dense tissue under the mask of a HU image; a scan
    that cuts the lungs off or whose lung volume lies outside the adult range.

These review rules are not refusals: on the test split some real CT pictures (thin
lung bases, turned) read like a radiograph to the orientation head, so a
picture is refused only on what its file says. Lung on a picture's edge is no reason:
MedSeg's tight crops have lung on 8-28 % of their border pixels, whole.
"""

from __future__ import annotations

import numpy as np

from lungseg.core.labels import LUNG_LEFT, LUNG_RIGHT
from lungseg.imaging import CTImage, Intensity
from lungseg.imaging.orientation import DIHEDRAL, describe_turn
from lungseg.imaging.readers import image_from_array
from lungseg.inference.model import TURN_CONFIDENCE, TurnReading
from lungseg.inference.result import Check, Prediction

NOT_AXIAL_TOP = 0.5
"""A photo may not be an axial CT slice where the orientation head's best turn has less
than this probability and its answer on the mirror image contradicts its answer on the
picture (a radiograph 0.32, a coronal reformat 0.38; 28 of the lung network's 3138 real
test answers, 6 of the one-pass network's)."""
TURNED_SURE = 0.8
"""A photo the orientation head read as turned or mirrored with less than this
probability was segmented turned upright on an unsure word: if the reading is wrong, so
are right and left. Chosen on the validation split, where the one-pass network swaps the
sides of 28 answers: with it 26 are flagged, and 6.7 % of the good answers (3.1 % on the
test split, 0.7 % before; ``lungseg evaluate``'s check table)."""
SMALL_LUNGS = 0.05
"""Lungs found on less than this share of a picture: an apex or base level. Read off the
test split's answers below lung Dice 0.85 (all under it); the validation split, scored
after, flags 100 % of its 4 such answers and 2.9 % of those at 0.95 or above."""
SMALL_SIDE = 0.1
"""One lung below this share of the other ..."""
FULL_SIZE_LUNG = 0.04
"""... while the other covers at least this share of the slice: a lung is missing."""
SMALL_SIDE_VOLUME = 0.25
"""On a scan, one lung below this share of the other's volume."""
DENSE_UNDER_LUNG_HU = -500.0
"""Mean HU under the mask above this: not aerated lung."""
ADULT_ML = (1500.0, 9000.0)
"""Lung volumes (total, mL) outside this range are not an adult's whole lungs."""


def check_slice(image: CTImage, lung: np.ndarray, reading: TurnReading | None) -> Check:
    """The check (``ok`` or ``review``) of the answer ``lung`` (labels 0 / right / left) for
    a slice that ``refusal_before_segmenting`` let through."""
    reasons = []
    if reading is not None and reading.top < NOT_AXIAL_TOP and reading.mirror_agrees is False:
        reasons.append(
            "this may not be an axial CT slice: the model finds no consistent top, bottom, "
            "right or left in it (a radiograph, a coronal or sagittal picture?)"
        )
    elif reading is not None and reading.top < TURN_CONFIDENCE:
        reasons.append(
            f"the model is unsure which way up the picture is (best guess {reading.top:.0%}): "
            "check that right and left are right"
        )
    elif reading is not None and reading.mirror_agrees is False:
        reasons.append(
            "the model reads the picture and its mirror image alike: right and left may be swapped"
        )
    elif reading is not None and reading.turn and reading.top < TURNED_SURE:
        reasons.append(
            "right and left hang on an unsure reading: the picture looks "
            f"{describe_turn(*DIHEDRAL[reading.turn])} to the model ({reading.top:.0%} sure) "
            "and was segmented that way; if it is not, they are swapped"
        )
    reasons += _lung_reasons(image, lung)
    found = float((lung != 0).mean())
    if 0 < found < SMALL_LUNGS:
        reasons.append(
            f"small lungs ({found:.1%} of the picture: an apex or base level?): their "
            "outline is less sure"
        )
    right, left = int((lung == LUNG_RIGHT).sum()), int((lung == LUNG_LEFT).sum())
    if min(right, left) < SMALL_SIDE * max(right, left) and max(right, left) >= (
        FULL_SIZE_LUNG * lung.size
    ):
        reasons.append(f"one lung is missing or much smaller (right {right} px, left {left} px)")
    return _verdict(reasons)


def check_volume(image: CTImage, lung: np.ndarray, measures: dict[str, float], unit: str) -> Check:
    """The check (``ok`` or ``review``) of a scan's answer (``lung``: ``(slices, rows, cols)``
    labels) that ``refusal_before_segmenting`` let through."""
    reasons = _lung_reasons(image, lung)
    if lung.any():
        levels = np.flatnonzero(lung.reshape(len(lung), -1).any(axis=1))
        whole = levels[0] > 0 and levels[-1] < len(lung) - 1
        if not whole:
            reasons.append("the scan cuts the lungs off at its top or bottom: volumes are partial")
        right, left = measures["right"], measures["left"]
        if min(right, left) < SMALL_SIDE_VOLUME * max(right, left):
            reasons.append(
                f"one lung is much smaller than the other (right {right:.0f}, left "
                f"{left:.0f} {unit})"
            )
        low, high = ADULT_ML
        if whole and unit == "mL" and not low <= measures["total"] <= high:
            reasons.append(
                f"lung volume {measures['total']:.0f} mL lies outside an adult's "
                f"{low / 1000:.1f}-{high / 1000:.0f} L"
            )
    return _verdict(reasons)


def check_prediction(prediction: Prediction, reading: TurnReading | None = None) -> Check:
    """The check of a prediction, slice or scan, of an input not refused."""
    if prediction.image.is_volume:
        return check_volume(prediction.image, prediction.lung, prediction.measures, prediction.unit)
    return check_slice(prediction.image, prediction.lung, reading)


def check_picture(
    picture: np.ndarray, intensity: Intensity, lung: np.ndarray, reading: TurnReading | None
) -> Check:
    """The check ``lungseg predict`` gives the answer ``lung`` for ``picture`` sent as a
    picture (``lungseg evaluate`` scores a refused one as no lung found)."""
    image = image_from_array(picture, intensity=intensity)
    refusal = refusal_before_segmenting(image)
    if refusal:
        return Check(status="refused", reasons=[refusal])
    return check_slice(image, lung, reading)


def refusal_before_segmenting(image: CTImage) -> str | None:
    """Why ``image`` is refused from the file and its pixels alone (no model run), if it is."""
    if image.not_ct:
        return image.not_ct
    if image.array.size and image.array.min() == image.array.max():
        return "the picture holds one value only: there is no body in it"
    return None


def _lung_reasons(image: CTImage, lung: np.ndarray) -> list[str]:
    if not lung.any():
        return ["no lung found"]
    if image.intensity is Intensity.HU:  # a plane at a time: no mask of a scan's size
        planes = zip(image.slices(), lung.reshape(-1, *lung.shape[-2:]), strict=True)
        total, count = 0.0, 0
        for values, labels in planes:
            inside = values[labels != 0]
            total, count = total + float(inside.sum(dtype=np.int64)), count + inside.size
        mean = total / count
        if mean > DENSE_UNDER_LUNG_HU:
            return [f"the tissue marked as lung is dense (mean {mean:.0f} HU), not aerated lung"]
    return []


def _verdict(reasons: list[str]) -> Check:
    return Check(status="review" if reasons else "ok", reasons=reasons)
