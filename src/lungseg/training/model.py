"""The network, its size, and starting it from an earlier run."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from monai.networks.nets import UNet

from lungseg.core.tasks import task_spec
from lungseg.errors import LungsegError
from lungseg.training.config import TrainConfig


def create_model(config: TrainConfig) -> torch.nn.Module:
    """MONAI's residual U-Net with the config's filters per level, 2D, batch norm, one
    output channel per class of the task."""
    if config.architecture != "unet":
        raise LungsegError(f"unknown architecture {config.architecture!r}; lungseg trains 'unet'")
    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=len(task_spec(config.task).classes),
        channels=config.channels,
        strides=(2,) * (len(config.channels) - 1),
        num_res_units=config.num_res_units,
        norm="batch",
    )


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def start_from(model: torch.nn.Module, checkpoint: str | Path) -> tuple[int, int]:
    """Start ``model`` from an earlier run's weights (a Lightning checkpoint of this
    project). A tensor of the same shape is copied whole; one that grew (the output
    layers of a network with more classes: a lung model's three channels into a
    network with a lung and an infection head) gets the old values in its leading
    part, and where its second dimension grew too, the rest of those leading rows is
    zeroed (in a convolution: nothing flows from the new channels into the old ones), so
    the old classes start exactly where the old network left them. Returns (tensors
    copied whole, tensors copied in part)."""
    try:
        stored = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    except (OSError, KeyError, RuntimeError, pickle.UnpicklingError) as error:
        raise LungsegError(f"{checkpoint}: not a lungseg training checkpoint ({error})") from error
    source = {k.removeprefix("model."): v for k, v in stored.items()}
    whole = partial = 0
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            old = source.get(name)
            if old is None or old.dim() != tensor.dim():
                continue
            if old.shape == tensor.shape:
                tensor.copy_(old)
                whole += 1
            elif all(a <= b for a, b in zip(old.shape, tensor.shape, strict=True)):
                if tensor.dim() >= 2 and old.shape[1] < tensor.shape[1]:
                    tensor[: old.shape[0], old.shape[1] :] = 0.0
                tensor[tuple(slice(0, n) for n in old.shape)] = old
                partial += 1
    if whole == 0:
        raise LungsegError(f"{checkpoint}: no weight fits this network's architecture")
    return whole, partial
