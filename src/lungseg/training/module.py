"""The Lightning module: loss, metrics per epoch, optimiser and schedule."""

from __future__ import annotations

from dataclasses import asdict

import pytorch_lightning as pl
import torch
from monai.losses import DiceCELoss
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig

from lungseg.core.metrics import Confusion
from lungseg.core.tasks import IS_INFECTION, LUNG_CODES, UNKNOWN, task_spec
from lungseg.training.config import TrainConfig
from lungseg.training.model import create_model


def slice_metrics(
    logits: torch.Tensor, label: torch.Tensor, foreground: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """Per-slice Dice and IoU of the foreground classes taken as one, and pixel accuracy
    over all classes; shape ``(batch,)`` each.

    A slice without foreground that is predicted without it scores 1 (the
    convention of ``lungseg.core.metrics``), so lung-free (or infection-free) slices count as they should.
    """
    prediction = logits.argmax(dim=1, keepdim=True)
    classes = torch.tensor(foreground, device=label.device)
    counts = Confusion.of(
        torch.isin(prediction[:, 0], classes).cpu().numpy(),
        torch.isin(label[:, 0], classes).cpu().numpy(),
        axes=(1, 2),
    )
    dice = torch.as_tensor(counts.dice(), dtype=torch.float32)
    iou = torch.as_tensor(counts.iou(), dtype=torch.float32)
    accuracy = (prediction == label).float().mean(dim=(1, 2, 3)).cpu()
    return {"dice": dice, "iou": iou, "accuracy": accuracy}


def lesion_classes(target: torch.Tensor) -> torch.Tensor:
    """Infection targets as classes for the Dice and accuracy of the curves: a one-class
    lesion counts as ground glass (the Dice takes ground glass and consolidation as
    one), "neither" and unknown as none."""
    return torch.where(target == IS_INFECTION, 1, torch.where(target > 3, 0, target))


def infection_loss(
    logits: torch.Tensor, target: torch.Tensor, class_dice: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of the infection head (4 classes: none, ground glass, consolidation, effusion)
    against targets that say only what their source knows (``core.tasks``).

    A typed pixel takes the log-probability of its class; a binary one of "ground glass
    or consolidation" (the two probabilities summed) or of "neither"; an unknown one
    adds nothing. A soft Dice of "ground glass or consolidation" over the supervised
    pixels is added against the imbalance (lesions are a few per cent of a slice).
    With ``class_dice``, that weight times the mean soft Dice loss of each typed class
    (ground glass, consolidation, effusion) over the batch's typed pixels is added:
    the rare classes weigh as much as ground glass. Returns the loss and the soft Dice
    (for logging).
    """
    probabilities = torch.softmax(logits, dim=1)
    lesion = probabilities[:, 1] + probabilities[:, 2]
    typed = target <= 3
    picked = torch.gather(probabilities, 1, target.clamp(max=3).unsqueeze(1))[:, 0]
    likelihood = torch.where(
        typed, picked, torch.where(target == IS_INFECTION, lesion, 1.0 - lesion)
    )
    known = target != UNKNOWN
    if not bool(known.any()):
        zero = logits.sum() * 0.0
        return zero, zero.detach() + 1.0
    nll = -torch.log(likelihood.clamp_min(1e-6))[known].mean()
    truth = ((target == 1) | (target == 2) | (target == IS_INFECTION)).float()
    weight = known.float()
    overlap = (lesion * truth * weight).sum()
    dice = (2.0 * overlap + 1.0) / ((lesion * weight).sum() + (truth * weight).sum() + 1.0)
    loss = nll + (1.0 - dice)
    if class_dice and bool(typed.any()):
        typed_weight = typed.float()
        losses = []
        for index in (1, 2, 3):
            found = probabilities[:, index] * typed_weight
            marked = (target == index).float()
            both = (found * marked).sum()
            losses.append(1.0 - (2.0 * both + 1.0) / (found.sum() + marked.sum() + 1.0))
        loss = loss + class_dice * torch.stack(losses).mean()
    return loss, dice.detach()


class LungSegModule(pl.LightningModule):
    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.config = config
        self.save_hyperparameters(asdict(config))
        self.model = create_model(config)
        self.foreground = task_spec(config.task).foreground
        self.heads = task_spec(config.task).heads
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        image, label = batch
        logits = self(image)
        size = image.shape[0]
        both = self.heads is not None and "lung" in self.heads
        if self.heads is not None:  # an infection head of partial labels (and lungs)
            target = label // LUNG_CODES if both else label  # tasks.split_code
            start, stop = self.heads["infection"]
            extra, infection_dice = infection_loss(
                logits[:, start:stop], target[:, 0], self.config.infection_class_dice
            )
            self.log(
                f"{stage}_infection_dice",
                infection_dice,
                on_step=False,
                on_epoch=True,
                batch_size=size,
                sync_dist=True,
            )
            if both:
                start, stop = self.heads["lung"]
                logits, label = logits[:, start:stop], label % LUNG_CODES
            else:
                logits, label = logits[:, start:stop], lesion_classes(target)
        if self.heads is None:
            loss = self.loss(logits, label)
        elif both:
            loss = self.loss(logits, label) + self.config.infection_weight * extra
        else:
            loss = extra
        self.log(
            f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=size, sync_dist=True
        )
        with torch.no_grad():
            metrics = slice_metrics(logits, label, self.foreground)
            for name, values in metrics.items():
                self.log(
                    f"{stage}_{name}",
                    values.mean(),
                    on_step=False,
                    on_epoch=True,
                    prog_bar=name == "dice",
                    batch_size=size,
                    sync_dist=True,
                )
            # what checkpoints and early stopping follow: the Dice, or both heads' mean
            score = metrics["dice"].mean()
            if both:
                score = (score + infection_dice) / 2.0
            self.log(
                f"{stage}_score",
                score,
                on_step=False,
                on_epoch=True,
                batch_size=size,
                sync_dist=True,
            )
        return loss

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        optimiser = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimiser, T_max=max(self.config.max_epochs, 1)
        )
        return {
            "optimizer": optimiser,
            "lr_scheduler": {"scheduler": schedule, "interval": "epoch"},
        }
