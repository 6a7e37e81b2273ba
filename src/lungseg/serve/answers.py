"""The answers to an upload, built whole in a job thread (segmentation, PNG and JSON
encoding included: nothing heavy runs on the event loop)."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.responses import Response
from PIL import Image

from lungseg.core.memory import keep_freed_memory
from lungseg.errors import ImageReadError, TooLargeError
from lungseg.imaging import CTImage, read_image, to_display
from lungseg.imaging.intensity import MEDIASTINAL_WINDOW
from lungseg.imaging.readers import ReadStopped
from lungseg.imaging.types import Intensity
from lungseg.inference import Prediction, Predictor
from lungseg.inference.encode import (
    SegUnbuildable,
    annotated_overlay,
    infection_png,
    lung_png,
    png_bytes,
    volume_mask_dicom_seg,
    volume_mask_nifti,
)
from lungseg.inference.result import ModelInfo, describe
from lungseg.serve.jobs import ClientGone, JobGate
from lungseg.serve.schemas import Frame, SliceAnswer, VolumeAnswer
from lungseg.serve.settings import ServeSettings
from lungseg.serve.uploads import UploadError

VIEWER_SIDE = 256  # volume slices are sent to the page at this size


@dataclass(frozen=True)
class Service:
    """What the endpoints share in one worker: settings, the loaded model and the gate
    that bounds running and waiting jobs."""

    settings: ServeSettings
    predictor: Predictor
    gate: JobGate
    model_info: ModelInfo

    @classmethod
    def start(cls, settings: ServeSettings, predictor: Predictor | None = None) -> Service:
        keep_freed_memory()  # in each server worker process (core.memory)
        predictor = predictor or Predictor(
            settings.model, infection=settings.infection, threads=settings.threads
        )
        gate = JobGate(settings.max_jobs, settings.max_queue)
        return cls(settings, predictor, gate, predictor.model_info())


def read_upload(
    service: Service, path: Path, name: str, volume: bool, cancelled: threading.Event
) -> CTImage:
    """Read an upload written to ``path`` (in its private folder), refusing the wrong
    endpoint's kind of input before any segmentation; a client that hangs up stops the
    reading between two files of a series or a zip (``ClientGone``)."""
    try:
        image = read_image(path, limits=service.settings.limits, stop=cancelled.is_set)
    except ReadStopped as error:
        raise ClientGone("the client disconnected; its job was stopped") from error
    except TooLargeError as error:
        raise UploadError(413, f"{name}: {error.problem}") from error
    except ImageReadError as error:  # name the user's file, not the private folder
        raise UploadError(400, f"{name}: {error.problem}") from error
    if image.is_volume != volume:
        where = "/api/v1/segment-volume" if image.is_volume else "/api/v1/segment"
        kind = "volume" if image.is_volume else "slice"
        raise UploadError(400, f"this is a {kind}; send it to {where}")
    return image


def segment_upload(
    service: Service, image: CTImage, name: str, cancelled: threading.Event
) -> Prediction:
    """Segment an upload already read. Runs in a job thread; stops (``ClientGone``)
    between two chunks of slices once ``cancelled``."""

    def progress(_done: int, _total: int) -> None:
        if cancelled.is_set():
            raise ClientGone("the client disconnected; its job was stopped")

    prediction = service.predictor.segment(image, progress=progress)
    if prediction.check.status == "refused":  # not an axial chest CT: no mask
        raise UploadError(
            422, f"{name}: refused: {prediction.check.reasons[0]}", prediction.check.model_dump()
        )
    return prediction


def slice_answer(
    service: Service,
    path: Path,
    name: str,
    format: str,
    started: float,
    cancelled: threading.Event,
) -> Response:
    """A slice's answer: JSON, or the overlay or mask PNG alone."""
    image = read_upload(service, path, name, False, cancelled)
    if format != "json":
        prediction = segment_upload(service, image, name, cancelled)
        if format == "mask":
            return Response(lung_png(prediction.lung), media_type="image/png")
        return Response(png_bytes(annotated_overlay(prediction)), media_type="image/png")
    with ThreadPoolExecutor(1, thread_name_prefix="lungseg-answer") as helper:
        # the picture as sent back depends on the input alone: encoded while it is segmented
        pictures = helper.submit(_display_pngs, image)
        prediction = segment_upload(service, image, name, cancelled)
        overlay = _b64_png(annotated_overlay(prediction))  # R/L and a legend: a picture to keep
        image_png, mediastinal_png = pictures.result()
    answer = SliceAnswer(
        **_summary(service, prediction, name, started),
        image_png=image_png,
        mediastinal_png=mediastinal_png,
        mask_png=_b64(lung_png(prediction.lung)),
        overlay_png=overlay,
        infection_png=None
        if prediction.infection is None
        else _b64(infection_png(prediction.infection)),
    )
    return _json(answer)


def _display_pngs(image: CTImage) -> tuple[str, str | None]:
    """The slice as shown (lung window, base64 PNG), and in the mediastinal window for HU."""
    mediastinal = mediastinal_window(image.array, image.intensity)
    return (
        _b64_png(to_display(image.array, image.intensity)),
        None if mediastinal is None else _b64_png(mediastinal),
    )


def volume_answer(
    service: Service,
    path: Path,
    name: str,
    format: str,
    started: float,
    cancelled: threading.Event,
) -> Response:
    """A scan's answer, a slice at a time: JSON, the mask NIfTI or a DICOM Segmentation."""
    image = read_upload(service, path, name, True, cancelled)
    prediction = segment_upload(service, image, name, cancelled)
    if prediction.image.geometry.affine is None:
        raise UploadError(
            400,
            f"{name}: a stack of pictures without patient geometry, not a scan; "
            "send a NIfTI volume or a zip of a DICOM series",
        )
    if format == "seg":
        if not prediction.image.geometry.dicom_headers:
            raise UploadError(400, f"{name}: a DICOM Segmentation needs a DICOM series")
        try:
            seg = volume_mask_dicom_seg(prediction)
        except SegUnbuildable as error:  # what the CLI says in a note, with the mask
            raise UploadError(
                422, f"{name}: no DICOM Segmentation can be built over this series: {error}"
            ) from error
        return Response(
            seg,
            media_type="application/dicom",
            headers={"Content-Disposition": "attachment; filename=seg.dcm"},
        )
    nifti = volume_mask_nifti(prediction)
    if format == "nifti":
        return Response(
            nifti,
            media_type="application/gzip",
            headers={"Content-Disposition": "attachment; filename=mask.nii.gz"},
        )
    image, frames = prediction.image, []
    for index, mask in enumerate(prediction.lung):
        plane = image.array[index]
        mediastinal = mediastinal_window(plane, image.intensity)
        frames.append(
            Frame(
                image_png=_b64_png(shrink(to_display(plane, image.intensity), False)),
                mediastinal_png=None
                if mediastinal is None
                else _b64_png(shrink(mediastinal, False)),
                mask_png=_b64(lung_png(shrink(mask, True))),
                infection_png=None
                if prediction.infection is None
                else _b64(infection_png(shrink(prediction.infection[index], True))),
            )
        )
    answer = VolumeAnswer(
        **_summary(service, prediction, name, started),
        mask_nifti=_b64(nifti),
        slices=frames,
    )
    return _json(answer)


def _summary(service: Service, prediction: Prediction, name: str, started: float) -> dict[str, Any]:
    total_ms = (time.perf_counter() - started) * 1000
    return dict(describe(prediction, model=service.model_info, file=name, total_ms=total_ms))


def _json(answer: SliceAnswer | VolumeAnswer) -> Response:
    """The answer as JSON (pydantic encodes it; no second pass through dicts)."""
    return Response(answer.model_dump_json(), media_type="application/json")


def _b64_png(array: np.ndarray) -> str:
    return _b64(png_bytes(array))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def mediastinal_window(plane: np.ndarray, intensity: Intensity) -> np.ndarray | None:
    """The slice in the mediastinal window; ``None`` for 8-bit pictures (already windowed)."""
    if intensity is not Intensity.HU:
        return None
    return to_display(plane, intensity, MEDIASTINAL_WINDOW)


def shrink(plane: np.ndarray, labels: bool) -> np.ndarray:
    """A plane at most ``VIEWER_SIDE`` pixels on its longer side (labels by nearest)."""
    longest = max(plane.shape)
    if longest <= VIEWER_SIDE:
        return plane
    scale = VIEWER_SIDE / longest
    size = (max(1, round(plane.shape[1] * scale)), max(1, round(plane.shape[0] * scale)))
    method = Image.Resampling.NEAREST if labels else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(plane).resize(size, method))
