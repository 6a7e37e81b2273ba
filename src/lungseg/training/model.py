"""The networks, looked up by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.nets import UNet

from lungseg.core.tasks import task_spec
from lungseg.errors import LungsegError
from lungseg.training.config import TrainConfig


def _unet(config: TrainConfig) -> torch.nn.Module:
    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=len(task_spec(config.task).classes),
        channels=config.channels,
        strides=(2,) * (len(config.channels) - 1),
        num_res_units=config.num_res_units,
        norm="batch",
    )


ARCHITECTURES: dict[str, Callable[[TrainConfig], torch.nn.Module]] = {"unet": _unet}


def create_model(config: TrainConfig) -> torch.nn.Module:
    if config.architecture not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        raise LungsegError(f"unknown architecture {config.architecture!r}; known: {known}")
    return ARCHITECTURES[config.architecture](config)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
