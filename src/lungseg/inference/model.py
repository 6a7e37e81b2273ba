"""The exported models, run with onnxruntime (no torch needed to predict)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.core.labels import LUNG_LEFT, LUNG_RIGHT, LUNG_SIDE_UNKNOWN
from lungseg.core.masks import clean_lung_labels
from lungseg.errors import LungsegError
from lungseg.imaging import CTImage, Intensity
from lungseg.imaging.body import body_estimates, body_in_view, usable
from lungseg.imaging.orientation import DIHEDRAL, MIRRORED_TURN, apply_dihedral, undo_dihedral
from lungseg.inference.card import LUNG_CLASSES, ModelCard
from lungseg.inference.preprocess import Preprocessing, decision_at_slice_size

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "lung_unet.onnx"
"""The model trained by the project's own commands, shipped inside the package."""
SHIPPED_INFECTION_MODEL = SHIPPED_MODEL.with_name("infection_unet.onnx")
"""The COVID-19 infection model, used where it is shipped."""

SIDED_LUNG_CLASSES = ("background", "right_lung", "left_lung")
"""Output classes of a lung model that tells the patient's right and left lung apart."""
DECISIONS = ("argmax",)
CHUNK = 8
"""Slices prepared and run through the model together (bounds memory on long scans).
Small, because the decisions and clean-up of the last chunk wait for the network: the
64-slice series at 1.84x the network's time with 8, 1.98x with 16, 2.06x with 32
(``benchmarks/overhead.py --only series --chunks 32 8 16 --repeats 7``, medians of
the rounds)."""
ORIENTATION_OUTPUT = "orientation"
TURN_CONFIDENCE = 0.5
"""A photo is turned upright where the orientation head gives one turn at least this
probability (``training.orientation``)."""
TURN_SURE = 0.9
"""Below this top probability the head is asked again about the mirrored picture, and
the turn both answers make likeliest is taken (chosen on the validation split: 97.9 %
of its pictures' turns found, against 97.4 % from the one answer)."""

Progress = Callable[[int, int], None]
"""Called with (slices done, slices in all) as work goes on."""


@dataclass(frozen=True)
class TurnReading:
    """What the orientation head read of one photo.

    Attributes:
        turn: the turn taken (index into ``DIHEDRAL``; 0: as given).
        top: the head's highest turn probability on the picture.
        mirror_agrees: whether its answer on the mirror image is the mirror of its
            answer on the picture (``None`` where the picture was not asked again: the
            head was sure).
    """

    turn: int
    top: float
    mirror_agrees: bool | None = None


def turn_with_mirror(orientation: np.ndarray, mirrored: np.ndarray) -> int:
    """The turn that a picture's orientation probabilities and those of its mirror image
    (which is in turn ``MIRRORED_TURN[k]`` where the picture is in turn ``k``) make
    likeliest together."""
    both = np.log(orientation + 1e-6) + np.log(mirrored[list(MIRRORED_TURN)] + 1e-6)
    return int(np.argmax(both))


class SegmentationModel:
    """An exported segmentation model (lung or infection) and its card, loaded once.

    The card's ``input.preprocessing`` is the model's input contract
    (``inference.preprocess.Preprocessing``); it is checked against the ONNX input
    and followed for every slice. A card without one gets the contract lungseg's
    first models were trained with (the same values as today's defaults).

    Args:
        path: the ``.onnx`` file (its ``<stem>.json`` or ``model_card.json`` beside it
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
        self.card = ModelCard.read(self.path)
        if not self.card.safe_weights:
            warnings.warn(
                f"{self.path}: its 8-bit weights saturate on processors without VNNI (results "
                "may be wrong there); `lungseg quantize RUN` writes them safely",
                stacklevel=2,
            )
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own exception types
            raise LungsegError(f"{self.path}: not a usable ONNX model: {error}") from error
        shape = self.session.get_inputs()[0].shape
        self.size = int(shape[-1])
        self.input_name = self.session.get_inputs()[0].name
        names = [output.name for output in self.session.get_outputs()]
        self.orients = ORIENTATION_OUTPUT in names[1:]
        """The model also says which way a picture is turned (an orientation head)."""
        self.preprocessing = self._contract()
        if self.card.decision not in DECISIONS:
            raise LungsegError(
                f"{self.path}: unknown decision rule {self.card.decision!r} in its card"
            )

    def _contract(self) -> Preprocessing:
        contract = self.card.preprocessing or Preprocessing(size=self.size)
        if contract.size != self.size:
            raise LungsegError(
                f"{self.path}: its card says {contract.size} px input, the ONNX file takes {self.size}"
            )
        return contract

    def prepare(self, images: list[np.ndarray], intensities: list[Intensity]) -> tuple:
        """The model inputs ``(n, size, size)`` of 2D slices and where each sits in its square."""
        squares, placements = [], []
        for image, intensity in zip(images, intensities, strict=True):
            square, placement = self.preprocessing.prepare(image, intensity)
            squares.append(square)
            placements.append(placement)
        stacked = np.stack(squares) if squares else np.zeros((0, self.size, self.size), np.float32)
        return stacked, placements

    def scores(self, squares: np.ndarray, batch_size: int = 4) -> np.ndarray:
        """Class scores ``(n, classes, size, size)`` of inputs ``(n, size, size)`` in [0, 1]:
        the argmax per head is the decision. They are probabilities from a float export
        and logits from an int8 model (``training.fast_graph`` drops the softmax)."""
        return self.run(squares, batch_size)[0]

    def run(self, squares: np.ndarray, batch_size: int = 4) -> tuple[np.ndarray, np.ndarray | None]:
        """Class scores (``scores``) of inputs ``(n, size, size)`` in [0, 1], and, for a model with
        an orientation head, the probability of each turn ``(n, 8)`` (else ``None``)."""
        out, turns = [], []
        for start in range(0, squares.shape[0], batch_size):
            batch = squares[start : start + batch_size, np.newaxis].astype(np.float32)
            answer = self.session.run(None, {self.input_name: batch})
            out.append(answer[0])
            if self.orients:
                turns.append(answer[1])
        if not out:
            empty = np.zeros((0, len(self.classes), self.size, self.size), np.float32)
            return empty, np.zeros((0, len(DIHEDRAL)), np.float32) if self.orients else None
        return np.concatenate(out), np.concatenate(turns) if self.orients else None

    def read_turn(
        self, orientation: np.ndarray | None, square: np.ndarray | None = None
    ) -> TurnReading:
        """The turn (index into ``DIHEDRAL``) a picture is in, from its orientation
        probabilities, with what the head read on the way (``TurnReading``): turn 0
        (upright, leave it) unless one turn has ``TURN_CONFIDENCE``. Given the picture's
        model input ``square``, an answer below ``TURN_SURE`` is checked against the
        head's answer on the mirrored picture: the turn both make likeliest is taken."""
        if orientation is None:
            return TurnReading(0, 1.0)
        turn = int(np.argmax(orientation))
        top = float(orientation[turn])
        if square is not None and top < TURN_SURE:
            _, mirrored = self.run(np.ascontiguousarray(square[np.newaxis, :, ::-1]))
            assert mirrored is not None  # the same model: it has the orientation output
            agrees = int(np.argmax(mirrored[0])) == MIRRORED_TURN[turn]
            return TurnReading(turn_with_mirror(orientation, mirrored[0]), top, agrees)
        return TurnReading(turn if top >= TURN_CONFIDENCE else 0, top)

    def iter_class_maps(
        self,
        images: list[np.ndarray],
        intensities: list[Intensity],
        *,
        progress: Progress | None = None,
        head: str | None = None,
    ) -> Iterator[np.ndarray]:
        """The decision (argmax of the scores) of ``head`` (by default the model's
        first) for each slice in turn, at the slice's own size. ``progress(done, total)``
        is called after each chunk (it may raise to stop)."""
        name = head or next(iter(self.heads))
        for maps in self.iter_head_maps(images, intensities, progress=progress):
            yield maps[name]

    def iter_head_maps(
        self,
        images: list[np.ndarray],
        intensities: list[Intensity],
        *,
        progress: Progress | None = None,
        upright: bool = False,
        readings: list[TurnReading | None] | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Each head's decision per slice, at the slice's own size, from one model pass.
        Slices go through the model in chunks of ``CHUNK``, so memory holds one chunk's
        inputs and scores, never a scan's.

        ``upright`` (pictures whose orientation nothing else tells: photos): where the
        model's orientation head finds a slice turned, the slice is turned upright,
        run again, and its decisions turned back; what the head read of each slice (its
        turn taken, ``TurnReading``) is appended to ``readings`` (``None`` where it was
        not asked)."""
        done = 0
        with ThreadPoolExecutor(1, thread_name_prefix="lungseg-model") as pool:
            chunks = self._model_chunks(images, intensities)
            pending = pool.submit(next, chunks, None)
            while (chunk := pending.result()) is not None:
                # the next chunk is prepared and run while this one's decisions are made
                pending = pool.submit(next, chunks, None)
                start, squares, placements, orientation, scores = chunk
                yield from self._decisions(
                    images,
                    intensities,
                    start,
                    squares,
                    placements,
                    orientation,
                    scores,
                    upright,
                    readings,
                )
                done += len(placements)
                if progress is not None:
                    progress(done, len(images))

    def _model_chunks(
        self,
        images: list[np.ndarray],
        intensities: list[Intensity],
    ) -> Iterator[tuple[int, np.ndarray, list[Any], np.ndarray | None, np.ndarray]]:
        """Chunk by chunk: its first index, model inputs, placements, orientation and
        class scores."""
        for start in range(0, len(images), CHUNK):
            chunk = slice(start, start + CHUNK)
            squares, placements = self.prepare(images[chunk], intensities[chunk])
            scores, orientation = self.run(squares)
            yield start, squares, placements, orientation, scores

    def _decisions(
        self,
        images: list[np.ndarray],
        intensities: list[Intensity],
        start: int,
        squares: np.ndarray,
        placements: list[Any],
        orientation: np.ndarray | None,
        scores: np.ndarray,
        upright: bool,
        readings: list[TurnReading | None] | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        for number, placement in enumerate(placements):
            reading = (
                self.read_turn(orientation[number], squares[number])
                if upright and orientation is not None
                else None
            )
            turn = 0 if reading is None else reading.turn
            if readings is not None:
                readings.append(reading)
            if turn:
                index = start + number
                yield self._turned_back(images[index], intensities[index], turn)
                continue
            yield {
                name: decision_at_slice_size(scores[number, a:b], placement)
                for name, (a, b) in self.heads.items()
            }

    def _turned_back(
        self,
        image: np.ndarray,
        intensity: Intensity,
        turn: int,
    ) -> dict[str, np.ndarray]:
        """The decisions of a slice in turn ``turn``: made on the slice turned upright,
        then turned back onto the slice as given."""
        turns, flip = DIHEDRAL[turn]
        maps = next(self.iter_head_maps([undo_dihedral(image, turns, flip)], [intensity]))
        return {name: apply_dihedral(decision, turns, flip) for name, decision in maps.items()}

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def heads(self) -> dict[str, tuple[int, int]]:
        """Output channels ``[start, stop)`` of each head (``lung``, ``infection``); a
        model of one task has one head, all its channels."""
        return self.card.heads or {self.task: (0, len(self.classes))}

    def head_classes(self, head: str) -> list[str]:
        start, stop = self.heads[head]
        return self.classes[start:stop]

    @property
    def has_infection_head(self) -> bool:
        """A lung model that also finds COVID-19 infection in the same pass."""
        return "infection" in self.heads and "lung" in self.heads

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def sided(self) -> bool:
        """Whether the model tells the right and left lung apart (by anatomy)."""
        return tuple(self.head_classes("lung") if "lung" in self.heads else self.classes) == (
            SIDED_LUNG_CLASSES
        )


def _iter_raw_lung_labels(
    model: SegmentationModel,
    images: list[np.ndarray],
    intensities: list[Intensity],
    progress: Progress | None,
    infection: np.ndarray | None = None,
    *,
    upright: bool = False,
    readings: list[TurnReading | None] | None = None,
) -> Iterator[np.ndarray]:
    """Raw lung labels per slice; with ``infection`` (a ``(n, rows, cols)`` buffer) the
    infection head's classes of the same pass are written into it. ``upright``, ``readings``: as
    ``SegmentationModel.iter_head_maps``."""
    if model.sided:
        table = np.array([0, LUNG_RIGHT, LUNG_LEFT], dtype=np.uint8)
    elif "lung" in model.heads and tuple(model.head_classes("lung")) == LUNG_CLASSES:
        table = np.array([0, LUNG_SIDE_UNKNOWN], dtype=np.uint8)
    else:
        raise LungsegError(f"{model.path}: not a lung model (classes {model.classes})")
    maps = model.iter_head_maps(
        images,
        intensities,
        progress=progress,
        upright=upright,
        readings=readings,
    )
    for index, (heads, image) in enumerate(zip(maps, images, strict=True)):
        blank = not image.size or image.min() == image.max()
        if infection is not None:
            infection[index] = 0 if blank else heads["infection"]
        yield np.zeros_like(heads["lung"]) if blank else table[heads["lung"]]


def segment_slices(
    model: SegmentationModel,
    images: list[np.ndarray],
    intensities: list[Intensity],
    *,
    raw: list[np.ndarray] | None = None,
    readings: list[TurnReading | None] | None = None,
) -> list[np.ndarray]:
    """Lung labels (0, 1 right, 2 left) of 2D pictures, each at its own size, run through
    the model together: each exactly what ``segment_image`` gives for that picture alone
    (a turned photo segmented upright; then ``postprocess_slice``). ``raw``,
    ``readings``: as ``segment_image``."""
    decisions = _iter_raw_lung_labels(
        model, images, intensities, None, upright=True, readings=readings
    )
    return [
        _finish_picture(labels, image, intensity, raw)
        for labels, image, intensity in zip(decisions, images, intensities, strict=True)
    ]


def _finish_picture(
    labels: np.ndarray,
    image: np.ndarray,
    intensity: Intensity,
    raw: list[np.ndarray] | None,
    postprocess: bool = True,
    first_body: np.ndarray | None = None,
) -> np.ndarray:
    if raw is not None:
        raw.append(labels.copy())
    return postprocess_slice(labels, image, intensity, first_body) if postprocess else labels


def postprocess_slice(
    labels: np.ndarray,
    image: np.ndarray,
    intensity: Intensity,
    first_body: np.ndarray | None = None,
) -> np.ndarray:
    """A slice's raw lung labels cleaned: specks gone, holes filled, nothing outside the body
    (what ``segment_image`` does to a slice). ``first_body``: the slice's first body
    estimate, where already made."""
    return clean_lung_labels(labels, body_for(labels, image, intensity, first_body))


BODY_KEEPS = 0.95
"""A body estimate is used if it keeps at least this share of what the best one keeps."""


def body_for(
    labels: np.ndarray,
    image: np.ndarray,
    intensity: Intensity,
    first: np.ndarray | None = None,
) -> np.ndarray | None:
    """Of a slice's body estimates (``imaging.body.body_estimates``, most restrictive
    first; ``first`` where already made), the first usable one that keeps nearly as much
    of the lungs found as the best one; ``None`` (no restriction) where no estimate lies
    wholly in view or each would cut lung away. Where the first keeps nearly all the
    lung no other can be preferred to it, and the others are not made."""
    lung = labels != 0
    estimates = body_estimates(image, intensity, first=first)
    first = next(estimates)
    in_view = first.any() and body_in_view(first)
    if in_view and int((lung & first).sum()) >= BODY_KEEPS * int(lung.sum()):
        return first
    candidates = usable([first, *estimates])
    kept = [int(lung.sum()) if b is None else int((lung & b).sum()) for b in candidates]
    best = max(kept, default=0)
    return next((b for b, k in zip(candidates, kept, strict=True) if k >= BODY_KEEPS * best), None)


def segment_image(
    model: SegmentationModel,
    image: CTImage,
    *,
    postprocess: bool = True,
    progress: Progress | None = None,
    infection: np.ndarray | None = None,
    raw: list[np.ndarray] | None = None,
    readings: list[TurnReading | None] | None = None,
) -> np.ndarray:
    """Lung labels (0, 1 right, 2 left) of a slice or a volume, the shape of ``image.array``:
    the one way from pixels to a lung mask, for ``lungseg predict``, the API and
    ``lungseg evaluate`` alike. Slice by slice, nothing outside the body; then a volume
    is cleaned in 3D (only what connects to the lungs stays), a slice in 2D
    (``core.masks.clean_lung_labels``).

    A photo (a slice whose file says nothing of its orientation) is segmented upright
    where the model's orientation head finds it turned; what the head read of it (the
    turn taken, an index into ``DIHEDRAL``) is appended to ``readings``.

    ``infection``: a uint8 buffer of the image's slices ``(n, rows, cols)`` that a model
    with an infection head fills from the same pass (0 none, 1 ground glass, 2
    consolidation, 3 effusion; not yet restricted to the lungs). ``raw``: where
    given, each slice's labels before any clean-up are appended to it (for scoring
    what the clean-up adds)."""
    planes = list(image.slices())
    intensities = [image.intensity] * len(planes)
    photo = not image.is_volume and image.geometry.orientation == "unknown"
    decisions = _iter_raw_lung_labels(
        model,
        planes,
        intensities,
        progress,
        infection,
        upright=photo,
        readings=readings,
    )
    if not image.is_volume:  # a slice: cleaned as a slice, as every picture is
        if not postprocess:
            return _finish_picture(next(decisions), planes[0], image.intensity, raw, False)
        with ThreadPoolExecutor(1, thread_name_prefix="lungseg-body") as helper:
            # where the body is depends on the picture alone: found while the network runs
            first = helper.submit(next, body_estimates(planes[0], image.intensity))
            labels = next(decisions)
            return _finish_picture(labels, planes[0], image.intensity, raw, True, first.result())
    stack = np.empty((len(planes), *planes[0].shape), np.uint8)
    for index, labels in enumerate(decisions):  # while the model runs on the next chunk
        stack[index] = labels
        if raw is not None:
            raw.append(labels.copy())
        # nothing outside the body is lung: slice by slice, no body volume (a slice
        # without lung has nothing to cut, and its body is not looked for)
        if postprocess and labels.any():
            region = body_for(labels, planes[index], image.intensity)
            if region is not None:
                stack[index][~region] = 0
    # only what connects in 3D to the lungs stays
    return clean_lung_labels(stack, in_place=True) if postprocess else stack
