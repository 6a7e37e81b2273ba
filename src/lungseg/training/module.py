"""The Lightning module: loss, metrics per epoch, optimiser and schedule."""

from __future__ import annotations

from dataclasses import asdict

import pytorch_lightning as pl
import torch
from monai.losses import DiceCELoss
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch.nn import functional

from lungseg.evaluation.metrics import dice_iou
from lungseg.training.config import TrainConfig
from lungseg.training.model import create_model
from lungseg.training.tasks import get_task


def slice_metrics(
    logits: torch.Tensor, label: torch.Tensor, foreground: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """Per-slice Dice and IoU of the foreground classes taken as one, and pixel accuracy
    over all classes; shape ``(batch,)`` each.

    A slice without foreground that is predicted without it scores 1 (MONAI's
    ``ignore_empty=False``), so lung-free (or infection-free) slices count as they should.
    """
    prediction = logits.argmax(dim=1, keepdim=True)
    classes = torch.tensor(foreground, device=label.device)
    pred_fg = torch.isin(prediction[:, 0], classes).long()
    true_fg = torch.isin(label[:, 0], classes).long()
    pred_onehot = functional.one_hot(pred_fg, 2).permute(0, 3, 1, 2).float()
    true_onehot = functional.one_hot(true_fg, 2).permute(0, 3, 1, 2).float()
    dice, iou = dice_iou(pred_onehot, true_onehot)
    accuracy = (prediction == label).float().mean(dim=(1, 2, 3))
    return {"dice": dice, "iou": iou, "accuracy": accuracy}


class LungSegModule(pl.LightningModule):
    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.config = config
        self.save_hyperparameters(asdict(config))
        self.model = create_model(config)
        self.foreground = get_task(config.task).foreground
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        image, label = batch
        logits = self(image)
        loss = self.loss(logits, label)
        size = image.shape[0]
        self.log(
            f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=size, sync_dist=True
        )
        with torch.no_grad():
            for name, values in slice_metrics(logits, label, self.foreground).items():
                self.log(
                    f"{stage}_{name}",
                    values.mean(),
                    on_step=False,
                    on_epoch=True,
                    prog_bar=name == "dice",
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
            self.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimiser, T_max=max(self.config.max_epochs, 1)
        )
        return {
            "optimizer": optimiser,
            "lr_scheduler": {"scheduler": schedule, "interval": "epoch"},
        }
