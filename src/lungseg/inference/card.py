"""A model's card: the JSON beside every ``.onnx`` file that says what the network takes,
what it gives and how it was made. Read and written here only, as one typed ``ModelCard``.

Training writes it (``training.train``), the orientation head and the int8 copy add to
it (``training.orientation``, ``training.quantize``); ``inference.model`` reads it to
follow the input contract and to name the outputs; the API sends it
(``GET /api/v1/model``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lungseg.errors import LungsegError
from lungseg.inference.preprocess import Preprocessing

SAFE_FORMAT_MARK = "no saturation on processors without VNNI"
"""What ``onnx["quantization"]["format"]`` says of 8-bit weights that onnxruntime computes
exactly on every processor (``training.weights``)."""
LUNG_CLASSES = ("background", "lung")
"""Output classes of a card that names none (lungseg's first models)."""
CARD_NAME = "model_card.json"
"""A training run's card; a shipped model's is ``<stem>.json`` beside the file."""


@dataclass(frozen=True)
class ModelCard:
    """What lungseg and a model's user need to know of one ONNX file.

    Attributes:
        name, task, description, created, lungseg_version: what the model is, and when
            and by which version it was made.
        preprocessing: the input contract (``inference.preprocess.Preprocessing``);
            ``None`` on a card without one (the defaults then hold).
        classes: output channels, in order, as ``core.tasks`` names them.
        heads: channels ``[start, stop)`` of each head (``lung``, ``infection``) of a
            network with several; empty for one head.
        decision: how scores become labels (``argmax`` per head).
        output_name, output_values: the ONNX output's name (``probabilities`` from a
            float export, ``logits`` from the int8 copy) and what its values are.
        orientation: the orientation head's output (name, classes, meaning), or empty.
        architecture, training, metrics: how it was trained and what it scored (for
            people; lungseg reads none of it).
        onnx: the file, its SHA-256, and for an int8 copy how it was quantised.
    """

    name: str = ""
    task: str = "lung"
    description: str = ""
    created: str | None = None
    lungseg_version: str = ""
    preprocessing: Preprocessing | None = None
    classes: tuple[str, ...] = LUNG_CLASSES
    heads: dict[str, tuple[int, int]] = field(default_factory=dict)
    decision: str = "argmax"
    output_name: str = "probabilities"
    output_values: str = ""
    orientation: dict[str, Any] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    onnx: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str | None:
        return self.onnx.get("sha256")

    @property
    def safe_weights(self) -> bool:
        """Not an 8-bit model whose weights saturate on processors without VNNI."""
        quantization = self.onnx.get("quantization")
        if not isinstance(quantization, dict):
            return True  # a float model
        return SAFE_FORMAT_MARK in str(quantization.get("format", ""))

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON stores it (the layout lungseg's cards have always had)."""
        size = self.preprocessing.size if self.preprocessing else None
        output: dict[str, Any] = {
            "name": self.output_name,
            "shape": ["batch", len(self.classes), size, size],
            "classes": list(self.classes),
            "decision": self.decision,
        }
        if self.output_values:
            output["values"] = self.output_values
        if self.heads:
            output["heads"] = {k: list(v) for k, v in self.heads.items()}
        if self.orientation:
            output["orientation"] = self.orientation
        card: dict[str, Any] = {
            "name": self.name,
            "lungseg_version": self.lungseg_version,
            "created": self.created,
            "task": self.task,
            "description": self.description,
            "architecture": self.architecture,
        }
        if self.preprocessing is not None:
            card["input"] = {
                "name": "image",
                "shape": ["batch", 1, size, size],
                "preprocessing": self.preprocessing.to_dict(),
                "note": "lungseg.inference.preprocess.Preprocessing reads 'preprocessing': "
                "HU through hu_window to [0, 1] (8-bit display values / display_divisor), "
                "padded to a centred square with pad_value, resized bilinearly to size. "
                "Any orientation and the common 8-bit renderings are trained.",
            }
        return {
            **card,
            "output": output,
            "training": self.training,
            "metrics": self.metrics,
            "onnx": self.onnx,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelCard:
        """A card from its JSON; what a section leaves out takes the default."""
        try:
            output = dict(values.get("output", {}))
            stated = values.get("input", {}).get("preprocessing")
            heads = output.get("heads") or {}
            return cls(
                name=str(values.get("name", cls.name)),
                task=str(values.get("task", cls.task)),
                description=str(values.get("description", "")),
                created=values.get("created"),
                lungseg_version=str(values.get("lungseg_version", "")),
                preprocessing=Preprocessing.from_dict(stated) if isinstance(stated, dict) else None,
                classes=tuple(str(c) for c in output.get("classes", LUNG_CLASSES)),
                heads={str(k): (int(v[0]), int(v[1])) for k, v in heads.items()},
                decision=str(output.get("decision", "argmax")),
                output_name=str(output.get("name", "probabilities")),
                output_values=str(output.get("values", "")),
                orientation=dict(output.get("orientation") or {}),
                architecture=dict(values.get("architecture", {})),
                training=dict(values.get("training", {})),
                metrics=dict(values.get("metrics", {})),
                onnx=dict(values.get("onnx", {})),
            )
        except (AttributeError, TypeError, ValueError, IndexError) as error:
            raise LungsegError(f"not a lungseg model card: {error}") from error

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        """The card of the model file ``path``: ``<stem>.json`` beside it (as lungseg
        ships models) or a run's ``model_card.json``; the defaults where there is none."""
        for candidate in (path.with_suffix(".json"), path.parent / CARD_NAME):
            if candidate.is_file():
                return cls.load(candidate)
        return cls()

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        """The card stored at ``path`` itself (a ``.json`` file)."""
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, LungsegError) as error:
            raise LungsegError(f"{path}: cannot read the model card: {error}") from error

    def write(self, path: Path) -> Path:
        """Store the card at ``path`` (written aside, then renamed: never half a card)."""
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        os.replace(partial, path)
        return path

    def but(self, **changes: Any) -> ModelCard:
        """This card with ``changes`` (a copy; cards are never changed in place)."""
        return replace(self, **changes)
