"""Tiny stand-in models for tests: exported to ONNX like a trained one."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lungseg.training.export import export_onnx


class DarkIsLung(torch.nn.Module):
    """Calls every pixel darker than mid-grey lung. On the synthetic slices that is lung
    plus the air around the body, which the post-processing then removes: a perfect
    segmenter that is the same in every orientation."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        lung = 40.0 * (0.5 - image)
        return torch.cat([-lung, lung], dim=1)


def dark_is_lung_onnx(path: Path, size: int = 64) -> Path:
    return export_onnx(DarkIsLung(), path, size)


class DarkIsGroundGlass(torch.nn.Module):
    """A 4-class stand-in infection model: everything dark is ground glass (class 1)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        ggo = 40.0 * (0.5 - image)
        zero = torch.zeros_like(image)
        return torch.cat([-ggo, ggo, zero - 20.0, zero - 20.0], dim=1)


def dark_is_ground_glass_onnx(path: Path, size: int = 64) -> Path:
    onnx_path = export_onnx(DarkIsGroundGlass(), path, size)
    card = {
        "name": "test-infection",
        "task": "infection",
        "output": {"classes": ["background", "ground_glass", "consolidation", "pleural_effusion"]},
    }
    onnx_path.with_suffix(".json").write_text(json.dumps(card))
    return onnx_path
