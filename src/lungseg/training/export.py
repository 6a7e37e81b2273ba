"""Export to ONNX (probabilities out), check it against PyTorch, write the model card."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
ORIENTATION_NAME = "orientation"


class WithSoftmax(torch.nn.Module):
    """The network with softmax on top: the exported model gives class probabilities
    (a softmax per head where it has several); a network with an orientation head
    (``training.orientation``) gives its 8 probabilities as a second output."""

    def __init__(
        self, model: torch.nn.Module, heads: dict[str, tuple[int, int]] | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.heads = sorted((heads or {}).values())

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.model(image)
        logits, orientation = out if isinstance(out, tuple) else (out, None)
        if not self.heads:
            probabilities = torch.softmax(logits, dim=1)
        else:
            probabilities = torch.cat(
                [torch.softmax(logits[:, a:b], dim=1) for a, b in self.heads], dim=1
            )
        if orientation is None:
            return probabilities
        return probabilities, torch.softmax(orientation, dim=1)


def export_onnx(
    model: torch.nn.Module,
    path: Path,
    size: int,
    heads: dict[str, tuple[int, int]] | None = None,
) -> Path:
    """Write ``model`` as ONNX: input ``image`` (batch, 1, size, size) in [0, 1], output
    ``probabilities`` (batch, classes, size, size), and ``orientation`` (batch, 8) for a
    network with an orientation head. Written aside, then renamed."""
    wrapped = WithSoftmax(model, heads).eval()
    with torch.no_grad():
        oriented = isinstance(wrapped(torch.zeros(1, 1, size, size)), tuple)
    outputs = [OUTPUT_NAME, ORIENTATION_NAME] if oriented else [OUTPUT_NAME]
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
            output_names=outputs,
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
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
    """Largest absolute difference of probabilities (of every output) between the ONNX
    file and ``model``.

    Args:
        images: ``(n, 1, size, size)`` float32 model inputs (real slices).
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {INPUT_NAME: images.astype(np.float32)})
    with torch.no_grad():
        wrapped = WithSoftmax(model, heads).eval()
        torch_out = wrapped(torch.from_numpy(images.astype(np.float32)))
    expected = torch_out if isinstance(torch_out, tuple) else (torch_out,)
    if len(expected) != len(onnx_out):
        raise ValueError(f"{path}: {len(onnx_out)} outputs, the network gives {len(expected)}")
    return max(
        float(np.abs(got - want.numpy()).max())
        for got, want in zip(onnx_out, expected, strict=True)
    )
