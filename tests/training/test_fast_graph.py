"""The int8-friendly rewrite of an exported network gives what the PyTorch network gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from lungseg.errors import LungsegError
from lungseg.training import fast_graph
from lungseg.training.export import export_onnx
from lungseg.training.fast_graph import rewrite_for_int8


class UpsamplingNet(torch.nn.Module):
    """MONAI's up-sampling pattern (transposed 3x3 convolution, stride 2, then batch norm
    and a one-slope PReLU) and a 1x1 convolution to the class logits."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.down = torch.nn.Conv2d(1, 6, 3, stride=2, padding=1)
        self.up = torch.nn.ConvTranspose2d(6, 5, 3, stride=2, padding=1, output_padding=1)
        self.norm = torch.nn.BatchNorm2d(5)
        self.act = torch.nn.PReLU()
        self.out = torch.nn.Conv2d(5, classes, 1)
        with torch.no_grad():  # batch statistics that are not the identity
            self.norm.running_mean.uniform_(-0.5, 0.5)
            self.norm.running_var.uniform_(0.5, 2.0)
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.3, 0.3)
            self.act.weight.fill_(0.3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.norm(self.up(self.down(image)))))


def _export(tmp_path: Path, classes: int, heads: dict[str, tuple[int, int]] | None) -> tuple:
    torch.manual_seed(0)
    network = UpsamplingNet(classes).eval()
    source = export_onnx(network, tmp_path / "model.onnx", 16, heads)
    return network, source


def _logits(network: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return network(torch.from_numpy(images)).numpy()


@pytest.mark.parametrize(
    ("classes", "heads"), [(3, None), (7, {"lung": (0, 3), "infection": (3, 7)})]
)
def test_rewritten_graph_gives_the_networks_logits_with_integer_friendly_operators(
    tmp_path: Path, classes: int, heads: dict[str, tuple[int, int]] | None
) -> None:
    network, source = _export(tmp_path, classes, heads)
    target = rewrite_for_int8(source, tmp_path / "fast.onnx", sorted((heads or {}).values()))
    graph = onnx.load(str(target)).graph
    operators = {node.op_type for node in graph.node}
    assert not {"ConvTranspose", "BatchNormalization", "PRelu", "Softmax"} & operators
    assert {"DepthToSpace", "LeakyRelu"} <= operators
    assert graph.output[0].name == "logits"
    images = np.random.default_rng(1).random((3, 1, 16, 16)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": images})
    np.testing.assert_allclose(got, _logits(network, images), atol=1e-5)


def test_a_wrong_rewrite_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, source = _export(tmp_path, 3, None)
    monkeypatch.setattr(fast_graph, "_TAP", ((2, 0), (1, None)))  # the phases swapped
    with pytest.raises(LungsegError, match="differs from"):
        rewrite_for_int8(source, tmp_path / "fast.onnx", [])
