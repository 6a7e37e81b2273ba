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


class DarkIsLungBySide(torch.nn.Module):
    """A 3-class stand-in for a model that tells the lungs apart: dark pixels are lung, the
    right lung where it lies on the image's left (the radiological view), or on the image's
    right with ``swap`` (a model that reads the picture as mirrored)."""

    def __init__(self, swap: bool = False) -> None:
        super().__init__()
        self.swap = swap

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        lung = 40.0 * (0.5 - image)
        columns = torch.arange(image.shape[-1], dtype=image.dtype) / image.shape[-1]
        image_left = (columns < 0.5).to(image.dtype).expand_as(image)
        right = image_left if not self.swap else 1.0 - image_left
        return torch.cat([-lung, lung + 20.0 * right - 10.0, lung - 20.0 * right + 10.0], dim=1)


def _sided_lung_onnx(network: torch.nn.Module, path: Path, size: int, name: str) -> Path:
    """``network`` exported with the card of a lung model with sides."""
    onnx_path = export_onnx(network, path, size)
    card = {
        "name": name,
        "task": "lung",
        "input": {"preprocessing": {"size": size}},
        "output": {"classes": ["background", "right_lung", "left_lung"], "decision": "argmax"},
    }
    onnx_path.with_suffix(".json").write_text(json.dumps(card))
    return onnx_path


def sided_onnx(path: Path, size: int = 64, *, swap: bool = False) -> Path:
    return _sided_lung_onnx(DarkIsLungBySide(swap), path, size, "test-sided-lung")


class LungsAndGroundGlass(torch.nn.Module):
    """A stand-in for a network with a lung and an infection head (7 channels): the
    sided lungs of ``DarkIsLungBySide`` and, on the same dark pixels, ground glass."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        lungs = DarkIsLungBySide()(image)
        ggo = 40.0 * (0.5 - image)
        zero = torch.zeros_like(image)
        return torch.cat([lungs, -ggo, ggo, zero - 20.0, zero - 20.0], dim=1)


def lungs_and_infection_onnx(path: Path, size: int = 64) -> Path:
    heads = {"lung": (0, 3), "infection": (3, 7)}
    onnx_path = export_onnx(LungsAndGroundGlass(), path, size, heads)
    card = {
        "name": "test-lungs-and-infection",
        "task": "lung+infection",
        "input": {"preprocessing": {"size": size}},
        "output": {
            "classes": [
                *("background", "right_lung", "left_lung"),
                *("no_infection", "ground_glass", "consolidation", "pleural_effusion"),
            ],
            "heads": {name: list(span) for name, span in heads.items()},
        },
    }
    onnx_path.with_suffix(".json").write_text(json.dumps(card))
    return onnx_path


class SidedAndTurned(torch.nn.Module):
    """``DarkIsLungBySide`` with an orientation head that says every picture is in turn
    ``turn`` (index into ``DIHEDRAL``) with probability ``confidence``."""

    def __init__(self, turn: int, confidence: float) -> None:
        super().__init__()
        others = (1.0 - confidence) / 7.0
        logits = torch.full((8,), float(torch.log(torch.tensor(others))))
        logits[turn] = float(torch.log(torch.tensor(confidence)))
        self.register_buffer("logits", logits)
        self.lungs = DarkIsLungBySide()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = image.mean(dim=(1, 2, 3))[:, None] * 0.0  # the batch's size, nothing else
        return self.lungs(image), batch + self.logits


def sided_and_turned_onnx(path: Path, turn: int, confidence: float = 0.95, size: int = 64) -> Path:
    network = SidedAndTurned(turn, confidence)
    return _sided_lung_onnx(network, path, size, "test-sided-lung-with-orientation")


class UnsureButConsistent(torch.nn.Module):
    """``DarkIsLungBySide`` with an orientation head that is unsure: a picture brighter
    on its left half is turn ``turn`` with probability 0.45 (too unsure to act on alone);
    its mirror image (brighter on the right) is, correctly, the mirrored turn
    ``mirrored`` with probability 0.8."""

    def __init__(self, turn: int, mirrored: int) -> None:
        super().__init__()
        first = torch.full((8,), 0.55 / 7)
        first[turn] = 0.45
        second = torch.full((8,), 0.2 / 7)
        second[mirrored] = 0.8
        self.register_buffer("first", first.log())
        self.register_buffer("second", second.log())
        self.lungs = DarkIsLungBySide()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = image.shape[-1] // 2
        brighter_left = image[..., :half].mean(dim=(1, 2, 3)) - image[..., half:].mean(
            dim=(1, 2, 3)
        )
        weight = torch.sigmoid(200.0 * brighter_left)[:, None]
        return self.lungs(image), weight * self.first + (1.0 - weight) * self.second


def unsure_but_consistent_onnx(path: Path, turn: int, mirrored: int, size: int = 64) -> Path:
    network = UnsureButConsistent(turn, mirrored)
    return _sided_lung_onnx(network, path, size, "test-unsure-orientation")
