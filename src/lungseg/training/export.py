"""Export to ONNX (probabilities out), check it against PyTorch, write the model card."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


class WithSoftmax(torch.nn.Module):
    """The network with softmax on top: the exported model gives class probabilities
    (a softmax per head where it has several)."""

    def __init__(
        self, model: torch.nn.Module, heads: dict[str, tuple[int, int]] | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.heads = sorted((heads or {}).values())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.model(image)
        if not self.heads:
            return torch.softmax(logits, dim=1)
        return torch.cat([torch.softmax(logits[:, a:b], dim=1) for a, b in self.heads], dim=1)


def export_onnx(
    model: torch.nn.Module,
    path: Path,
    size: int,
    heads: dict[str, tuple[int, int]] | None = None,
) -> Path:
    """Write ``model`` as ONNX: input ``image`` (batch, 1, size, size) in [0, 1], output
    ``probabilities`` (batch, classes, size, size). Written aside, then renamed."""
    wrapped = WithSoftmax(model, heads).eval()
    partial = path.with_name(path.name + ".partial")
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no extra package (onnxscript).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapped,
            (torch.zeros(1, 1, size, size),),
            str(partial),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=ONNX_OPSET,
        )
    partial.replace(path)
    return path


def onnx_max_difference(
    path: Path,
    model: torch.nn.Module,
    images: np.ndarray,
    heads: dict[str, tuple[int, int]] | None = None,
) -> float:
    """Largest absolute difference of probabilities between the ONNX file and ``model``.

    Args:
        images: ``(n, 1, size, size)`` float32 model inputs (real slices).
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {INPUT_NAME: images.astype(np.float32)})[0]
    with torch.no_grad():
        wrapped = WithSoftmax(model, heads).eval()
        torch_out = wrapped(torch.from_numpy(images.astype(np.float32))).numpy()
    return float(np.abs(onnx_out - torch_out).max())


def write_model_card(path: Path, card: dict[str, Any]) -> Path:
    path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    return path
