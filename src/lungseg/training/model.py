"""The network, its size, and starting it from an earlier run."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import cast

import torch
from monai.networks.layers import SkipConnection
from monai.networks.nets import UNet

from lungseg.core.tasks import task_spec
from lungseg.errors import LungsegError
from lungseg.training.config import TrainConfig

ARCHITECTURES = ("unet", "unet-two-decoders")


def create_model(config: TrainConfig) -> torch.nn.Module:
    """MONAI's residual U-Net with the config's filters per level, 2D, batch norm, one
    output channel per class of the task (``unet``); or, for a task with a lung and an
    infection head, one encoder with a decoder per head (``unet-two-decoders``)."""
    spec = task_spec(config.task)
    if config.architecture == "unet":
        return _unet(config, len(spec.classes))
    if config.architecture == "unet-two-decoders":
        heads = spec.heads or {}
        if set(heads) != {"lung", "infection"}:
            raise LungsegError(
                f"architecture {config.architecture!r} needs a task with a lung and an "
                f"infection head; {config.task!r} has {sorted(heads) or 'one head'}"
            )
        (a, b), (c, d) = heads["lung"], heads["infection"]
        if not a == 0 < b == c < d:
            raise LungsegError(f"{config.architecture} expects the lung head's channels first")
        return TwoDecoderUNet(_unet(config, b - a), _unet(config, d - c))
    raise LungsegError(
        f"unknown architecture {config.architecture!r}; lungseg trains {', '.join(ARCHITECTURES)}"
    )


def _unet(config: TrainConfig, classes: int) -> UNet:
    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=classes,
        channels=config.channels,
        strides=(2,) * (len(config.channels) - 1),
        num_res_units=config.num_res_units,
        norm="batch",
    )


def _levels(net: UNet) -> tuple[list[torch.nn.Sequential], SkipConnection]:
    """MONAI's U-Net nests each level as ``Sequential(down, SkipConnection(deeper), up)``;
    returns the levels from the top and the deepest skip connection (around the bottom
    layer)."""
    levels = [cast(torch.nn.Sequential, net.model)]
    while True:
        skip = cast(SkipConnection, levels[-1][1])
        deeper = skip.submodule
        if not (
            isinstance(deeper, torch.nn.Sequential)
            and len(deeper) == 3
            and isinstance(deeper[1], SkipConnection)
        ):
            return levels, skip
        levels.append(deeper)


def unet_encode(
    levels: list[torch.nn.Sequential], bottom: SkipConnection, image: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A MONAI U-Net's encoder (``_levels``): each level's down output (the skips, from
    the top) and the deepest features."""
    skips = []
    x = image
    for level in levels:
        x = level[0](x)
        skips.append(x)
    return skips, cast(torch.Tensor, bottom.submodule(x))


def unet_decode(
    levels: list[torch.nn.Sequential], skips: list[torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """A MONAI U-Net's decoder from the deepest features ``x`` up, reading ``skips``."""
    for skip, level in zip(reversed(skips), reversed(levels), strict=True):
        x = level[2](torch.cat([skip, x], dim=1))
    return x


class TwoDecoderUNet(torch.nn.Module):
    """One encoder, a decoder per head: the lung U-Net whole, and the infection U-Net's
    decoder (its up-sampling layers) reading the lung encoder's features and skips. The
    output is the two heads' logits side by side (lung channels first), as one network
    with two heads gives them. Module names follow MONAI's U-Net (``lung.model...``,
    ``infection.model...``), so each part starts from a one-head run of its own
    (``warm_start``)."""

    def __init__(self, lung: UNet, infection: UNet) -> None:
        super().__init__()
        self.lung = lung
        self.infection = infection
        self._lung_levels, self._bottom = _levels(lung)
        self._infection_levels, infection_bottom = _levels(infection)
        for level in self._infection_levels:  # the infection encoder is the lung's
            level[0] = torch.nn.Identity()
        infection_bottom.submodule = torch.nn.Identity()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_with_bottom(image)[0]

    def forward_with_bottom(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and the encoder's deepest features (for an orientation head)."""
        skips, bottom = unet_encode(self._lung_levels, self._bottom, image)
        lung = infection = bottom
        for skip, lung_level, infection_level in reversed(
            list(zip(skips, self._lung_levels, self._infection_levels, strict=True))
        ):
            lung = lung_level[2](torch.cat([skip, lung], dim=1))
            infection = infection_level[2](torch.cat([skip, infection], dim=1))
        return torch.cat([lung, infection], dim=1), bottom


def warm_start(model: torch.nn.Module, config: TrainConfig) -> list[str]:
    """Start ``model`` from the config's earlier runs (``init_from``, and for two
    decoders ``init_infection_from`` for the infection decoder, unless ``init_from`` is
    a run of the two-decoder network itself); one line per run used."""
    parts: list[tuple[torch.nn.Module, str]]
    if isinstance(model, TwoDecoderUNet) and _has_two_decoders(config.init_from):
        parts = [(model, config.init_from)]  # an earlier run of this network: all of it
        if config.init_infection_from:
            raise LungsegError(
                f"{config.init_from} starts both decoders already; leave init_infection_from empty"
            )
    elif isinstance(model, TwoDecoderUNet):
        parts = [(model.lung, config.init_from), (model.infection, config.init_infection_from)]
    elif config.init_infection_from:
        raise LungsegError("init_infection_from needs the 'unet-two-decoders' architecture")
    else:
        parts = [(model, config.init_from)]
    lines = []
    for part, checkpoint in parts:
        if checkpoint:
            whole, partial = start_from(part, checkpoint)
            lines.append(f"started from {checkpoint}: {whole} tensors whole, {partial} in part")
    return lines


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _has_two_decoders(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` is a lungseg run of the two-decoder network."""
    if not checkpoint:
        return False
    try:
        stored = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    except (OSError, KeyError, RuntimeError, pickle.UnpicklingError):
        return False  # start_from says what is wrong with it
    return any(name.startswith("model.infection.") for name in stored)


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
