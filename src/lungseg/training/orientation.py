"""Which way a slice picture is turned: an orientation head on the segmentation network.

A photo of a slice (PNG, JPEG, a screenshot) says nothing about its orientation,
and people save them mirrored, upside down (the original project's own exporter)
or turned. The segmentation network tells the right lung from the left by anatomy,
but not reliably on a turned picture: upright it gets the sides right on every test
slice, mirrored on as few as 80 % of MedSeg's.

So the network gets a second output: which of the 8 flips and quarter turns
(``imaging.orientation.DIHEDRAL``) the picture is, read from its encoder's deepest
features (the heart, the spine, the liver are all there). ``lungseg orient`` trains
only this small head on a finished run, the rest frozen, so the lungs come out
exactly as before; inference turns a photo upright where the head says it is turned,
segments it there and turns the masks back (``inference.model``).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
import torch
from monai.networks.nets import UNet
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lungseg.core.files import sha256_of
from lungseg.dataset.store import BuiltDataset
from lungseg.errors import LungsegError
from lungseg.imaging import Intensity
from lungseg.imaging.orientation import DIHEDRAL, apply_dihedral, dihedral_name, undo_dihedral
from lungseg.imaging.render import RENDERINGS, render_hu
from lungseg.inference.card import CARD_NAME, ModelCard
from lungseg.inference.preprocess import Preprocessing
from lungseg.training.augment import Augmenter
from lungseg.training.config import TrainConfig
from lungseg.training.data import PreparedSlice, prepare_split
from lungseg.training.export import export_onnx, onnx_max_difference
from lungseg.training.model import (
    TwoDecoderUNet,
    _levels,
    create_model,
    unet_decode,
    unet_encode,
)
from lungseg.training.quantize import quantize_run
from lungseg.training.train import reseed_worker

ORIENTATION_CLASSES = tuple(dihedral_name(turns, flip) for turns, flip in DIHEDRAL)
"""Output ``k`` of the head: the picture is the upright slice through ``DIHEDRAL[k]``."""
HEAD_FILE = "orientation.pt"
HEAD_WIDTH = 32


class OrientationHead(torch.nn.Module):
    """Deepest encoder features ``(batch, C, s, s)`` to 8 orientation logits: a 1x1
    convolution to ``HEAD_WIDTH`` channels, a strided 3x3 one, and a linear layer over
    the whole grid (where things lie is the point, so no pooling)."""

    def __init__(self, channels: int, grid: int) -> None:
        super().__init__()
        half = (grid + 1) // 2
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(channels, HEAD_WIDTH, 1, bias=False),
            torch.nn.BatchNorm2d(HEAD_WIDTH),
            torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(HEAD_WIDTH, HEAD_WIDTH, 3, 2, 1, bias=False),
            torch.nn.BatchNorm2d(HEAD_WIDTH),
            torch.nn.ReLU(inplace=True),
            torch.nn.Flatten(),
            torch.nn.Dropout(0.3),
            torch.nn.Linear(HEAD_WIDTH * half * half, len(DIHEDRAL)),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.layers(features))


def unet_with_bottom(net: UNet, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MONAI's U-Net forward, written out level by level (the same result as
    ``net(image)``), with its deepest features: ``(logits, bottom)``."""
    levels, bottom_skip = _levels(net)
    skips, bottom = unet_encode(levels, bottom_skip, image)
    return unet_decode(levels, skips, bottom), bottom


def encoder_bottom(net: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """A U-Net's (or the two-decoder network's) deepest features, without its decoders."""
    if isinstance(net, TwoDecoderUNet):
        levels, bottom_skip = net._lung_levels, net._bottom
    elif isinstance(net, UNet):
        levels, bottom_skip = _levels(net)
    else:
        raise LungsegError(f"no orientation head for a {type(net).__name__}")
    return unet_encode(levels, bottom_skip, image)[1]


class OrientedNetwork(torch.nn.Module):
    """A segmentation network (``unet`` or ``unet-two-decoders``) and its orientation
    head: ``(segmentation logits, orientation logits)`` from one pass."""

    def __init__(self, net: torch.nn.Module, head: OrientationHead) -> None:
        super().__init__()
        self.net = net
        self.head = head

    def orientation(self, image: torch.Tensor) -> torch.Tensor:
        """The orientation logits alone (the encoder and the head: what training needs)."""
        return cast(torch.Tensor, self.head(encoder_bottom(self.net, image)))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.net, TwoDecoderUNet):
            logits, bottom = self.net.forward_with_bottom(image)
        elif isinstance(self.net, UNet):
            logits, bottom = unet_with_bottom(self.net, image)
        else:
            raise LungsegError(f"no orientation head for a {type(self.net).__name__}")
        return logits, self.head(bottom)


def head_for(config: TrainConfig) -> OrientationHead:
    grid = config.image_size // 2 ** (len(config.channels) - 1)
    return OrientationHead(config.channels[-1], grid)


def load_run(run: Path) -> tuple[TrainConfig, torch.nn.Module]:
    """A run's config and its network with the checkpoint's weights (eval mode)."""
    if not (run / "config.json").is_file():
        raise LungsegError(f"{run}: not a lungseg training run (no config.json)")
    config = TrainConfig.load(run / "config.json")
    checkpoint = run / "checkpoints" / "best.ckpt"
    try:
        stored = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    except (OSError, KeyError, RuntimeError) as error:
        raise LungsegError(f"{checkpoint}: cannot read the run's checkpoint ({error})") from error
    net = create_model(config)
    net.load_state_dict({k.removeprefix("model."): v for k, v in stored.items()})
    return config, net.eval()


class TurnedSlices(Dataset[tuple[torch.Tensor, int]]):
    """Model inputs of slices turned by one of the 8 flips and quarter turns, and which.

    Training (``augmenter`` given): a random rendering, crop and affine step of the
    upright slice, then a random turn. Validation: slice ``i`` in every turn (item
    ``8 i + k`` is turn ``k``), HU slices shown through the exporters in turn as
    training's validation does, with the exporter's own turn taken out."""

    def __init__(
        self,
        slices: list[PreparedSlice],
        preprocessing: Preprocessing,
        augmenter: Augmenter | None = None,
    ) -> None:
        self.slices = slices
        self.preprocessing = preprocessing
        self.augmenter = augmenter
        self._fixed: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.slices) * (1 if self.augmenter else len(DIHEDRAL))

    def upright_input(self, index: int) -> np.ndarray:
        item = self.slices[index]
        if self.augmenter is not None:
            return self.augmenter(item.image, item.intensity, item.labels)[0]
        if index not in self._fixed:  # validation: rendered once, shown in 8 turns
            self._fixed[index] = self._rendered(index)
        return self._fixed[index]

    def _rendered(self, index: int) -> np.ndarray:
        item = self.slices[index]
        image, intensity = item.image, item.intensity
        exporters = [None, *RENDERINGS]
        name = exporters[index % len(exporters)]
        if name is not None and intensity is Intensity.HU:
            exporter = RENDERINGS[name]
            picture = render_hu(item.image, exporter, as_jpeg=False)
            image = undo_dihedral(picture, exporter.turns, exporter.flip)
            intensity = Intensity.DISPLAY
        return self.preprocessing.prepare(image, intensity)[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.augmenter is not None:
            upright = self.upright_input(index)
            turn = int(self.augmenter.rng.integers(len(DIHEDRAL)))
        else:
            upright = self.upright_input(index // len(DIHEDRAL))
            turn = index % len(DIHEDRAL)
        picture = np.array(apply_dihedral(np.asarray(upright, np.float32), *DIHEDRAL[turn]))
        return torch.from_numpy(picture)[None], turn


@dataclass
class OrientationResult:
    run: Path
    val_accuracy: float
    val_mirror_accuracy: float
    best_epoch: int
    epochs: int
    minutes: float


def _accuracy(
    model: OrientedNetwork, loader: DataLoader[tuple[torch.Tensor, int]]
) -> tuple[float, float]:
    """Share of validation pictures whose turn is found, and whose mirroring is."""
    found, truth = [], []
    model.head.eval()
    with torch.no_grad():
        for images, turns in loader:
            found.append(model.orientation(images).argmax(1))
            truth.append(turns)
    predicted, actual = torch.cat(found).numpy(), torch.cat(truth).numpy()
    mirrored = np.array([flip for _, flip in DIHEDRAL])
    return (
        float((predicted == actual).mean()),
        float((mirrored[predicted] == mirrored[actual]).mean()),
    )


def train_orientation(
    run: str | Path, data: str | Path, *, epochs: int = 8, seed: int = 0
) -> OrientationResult:
    """Train the orientation head of a finished run (its network frozen), keep the head
    best on validation, and write the run's ``model.onnx`` (with the ``orientation``
    output), its card and its int8 model again."""
    run, data = Path(run), Path(data)
    config, net = load_run(run)
    torch.manual_seed(seed)
    started = time.perf_counter()
    model = OrientedNetwork(net, head_for(config))
    for parameter in model.net.parameters():
        parameter.requires_grad_(False)
    dataset = BuiltDataset(data)
    preprocessing = Preprocessing(size=config.image_size)
    limit = config.max_slices_per_patient
    train_slices = prepare_split(dataset, "train", max_slices_per_patient=limit)
    val_slices = prepare_split(dataset, "val", max_slices_per_patient=limit)
    # upright renderings, crops and affine steps; the turn is the head's target
    augmenter = Augmenter(replace(config.augment, dihedral=0.0), preprocessing, seed=seed)
    train_loader = DataLoader(
        TurnedSlices(train_slices, preprocessing, augmenter),
        batch_size=32,
        shuffle=True,
        num_workers=config.num_workers,
        worker_init_fn=reseed_worker,
        persistent_workers=config.num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
    val_loader = DataLoader(TurnedSlices(val_slices, preprocessing), batch_size=64)
    optimiser = torch.optim.AdamW(model.head.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, 2e-3, total_steps=max(1, epochs * len(train_loader))
    )
    rows, best, best_state = [], (-1.0, -1.0), model.head.state_dict()
    best_epoch = 0
    for epoch in tqdm(range(epochs), desc="orientation head", unit="epoch"):
        model.head.train()
        losses = []
        for images, turns in train_loader:
            logits = model.orientation(images)
            loss = torch.nn.functional.cross_entropy(logits, turns, label_smoothing=0.05)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
        accuracy, mirror = _accuracy(model, val_loader)
        rows.append(
            {
                "epoch": epoch,
                "train_loss": np.mean(losses),
                "val_accuracy": accuracy,
                "val_mirror_accuracy": mirror,
            }
        )
        if (accuracy, mirror) > best:
            best, best_epoch = (accuracy, mirror), epoch
            best_state = {k: v.clone() for k, v in model.head.state_dict().items()}
    model.head.load_state_dict(best_state)
    model.eval()
    torch.save({"state_dict": best_state, "epoch": best_epoch}, run / "checkpoints" / HEAD_FILE)
    with (run / "orientation_metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_orientation_curves(rows, best_epoch, run / "orientation_curves.png")
    minutes = (time.perf_counter() - started) / 60.0
    result = OrientationResult(run, best[0], best[1], best_epoch, epochs, minutes)
    _export(run, config, model, val_loader, result, data)
    return result


def _export(
    run: Path,
    config: TrainConfig,
    model: OrientedNetwork,
    val_loader: DataLoader[tuple[torch.Tensor, int]],
    result: OrientationResult,
    data: Path,
) -> None:
    from lungseg.dataset.tasks import get_task

    heads = get_task(config.task).heads
    path = export_onnx(model, run / "model.onnx", config.image_size, heads)
    check = next(iter(val_loader))[0][:8].numpy()
    difference = onnx_max_difference(path, model, check, heads)
    card = ModelCard.load(run / CARD_NAME)
    card.but(
        orientation={
            "name": "orientation",
            "shape": ["batch", len(ORIENTATION_CLASSES)],
            "classes": list(ORIENTATION_CLASSES),
            "meaning": "probability that the picture is the upright slice (radiological view) "
            "mirrored left-right and/or turned counter-clockwise as named "
            "(imaging.orientation.apply_dihedral)",
            "trained": f"lungseg orient: the head alone, {result.epochs} epochs in "
            f"{result.minutes:.1f} min, the segmentation network frozen",
        },
        metrics={
            **card.metrics,
            "orientation_val_accuracy": round(result.val_accuracy, 4),
            "orientation_val_mirror_accuracy": round(result.val_mirror_accuracy, 4),
        },
        onnx={
            "file": path.name,
            "sha256": sha256_of(path),
            "max_abs_difference_vs_pytorch": difference,
        },
    ).write(run / CARD_NAME)
    quantize_run(run, data)


def plot_orientation_curves(rows: list[dict[str, float]], best_epoch: int, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lungseg.reporting import save_figure

    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(epochs, [r["train_loss"] for r in rows], "-", label="train")
    axes[0].set_title("loss (cross-entropy)")
    for key, label in (("val_accuracy", "turn found"), ("val_mirror_accuracy", "mirroring found")):
        axes[1].plot(epochs, [r[key] for r in rows], "-o", markersize=3, label=label)
    axes[1].axvline(best_epoch, color="grey", linestyle=":", label="kept")
    axes[1].set_title("validation: 8 turns of every slice")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, out, 90)
    return out
