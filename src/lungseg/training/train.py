"""``lungseg train``: fit the U-Net on a built dataset and leave a complete run folder.

A run folder holds ``config.json``, ``metrics.csv`` (per epoch), TensorBoard logs,
``checkpoints/`` (best by validation Dice, and the last epoch's), ``curves.png``,
``model.onnx`` and ``model_card.json``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, get_worker_info

from lungseg import __version__
from lungseg.core.files import sha256_of
from lungseg.dataset.store import BuiltDataset
from lungseg.dataset.tasks import get_task
from lungseg.errors import LungsegError
from lungseg.inference.card import CARD_NAME, ModelCard
from lungseg.inference.preprocess import Preprocessing
from lungseg.training.augment import Augmenter
from lungseg.training.config import TrainConfig
from lungseg.training.curves import plot_curves, read_epochs
from lungseg.training.data import SliceDataset, prepare_split, spread_per_patient
from lungseg.training.export import export_onnx, onnx_max_difference
from lungseg.training.model import count_parameters, warm_start
from lungseg.training.module import LungSegModule
from lungseg.training.quantize import quantize_run


@dataclass
class TrainResult:
    out: Path
    best_val_dice: float
    best_epoch: int
    epochs_run: int
    minutes: float
    onnx_max_difference: float


def reseed_worker(worker_id: int) -> None:
    """A data-loader worker's own augmentation draws (any dataset with an ``augmenter``)."""
    info = get_worker_info()
    augmenter = getattr(info.dataset, "augmenter", None) if info is not None else None
    if info is not None and augmenter is not None:
        augmenter.reseed(info.seed % (2**32))


def launched_by_ddp() -> bool:
    """Whether this process is one Lightning's DDP started by running the same command
    again (its rank is set): only the first process makes the run folder and reports."""
    ranks = (os.environ.get(name, "0") for name in ("LOCAL_RANK", "NODE_RANK"))
    return any(rank.isdigit() and int(rank) > 0 for rank in ranks)


def train(config: TrainConfig, data: str | Path, out: str | Path) -> TrainResult:
    """Train on ``data`` (a folder made by ``lungseg dataset build``) into the run folder ``out``.

    Raises:
        LungsegError: ``out`` already holds a run, or the dataset lacks a split.
    """
    out, data = Path(out), Path(data)
    # Lightning's DDP starts the other processes by running the same command again (with
    # their rank set); only the first one makes the run folder.
    launched_by_ddp = (
        int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0
    )
    if not launched_by_ddp:
        if (out / "config.json").exists():
            raise LungsegError(f"{out} already holds a run; choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "config.json")
    pl.seed_everything(config.seed, workers=True)
    started = time.perf_counter()

    dataset = BuiltDataset(data)
    train_slices = prepare_split(
        dataset,
        "train",
        include_flagged=config.include_flagged,
        task=config.task,
        max_slices_per_patient=config.max_slices_per_patient,
    )
    val_slices = prepare_split(
        dataset, "val", task=config.task, max_slices_per_patient=config.max_slices_per_patient
    )
    preprocessing = Preprocessing(size=config.image_size)
    augmenter = Augmenter(config.augment, preprocessing, seed=config.seed)
    workers, persistent = config.num_workers, config.num_workers > 0
    train_loader = DataLoader(
        SliceDataset(train_slices, preprocessing, augmenter),
        batch_size=config.batch_size,
        shuffle=True,
        worker_init_fn=reseed_worker,
        generator=torch.Generator().manual_seed(config.seed),
        num_workers=workers,
        persistent_workers=persistent,
    )
    val_loader = DataLoader(
        SliceDataset(val_slices, preprocessing, rendered=True),
        batch_size=config.batch_size,
        num_workers=workers,
        persistent_workers=persistent,
    )

    module = LungSegModule(config)
    for line in warm_start(module.model, config):
        print(line)
    best = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="best", monitor=config.monitor, mode="max"
    )
    # the network after the last epoch, every epoch (Lightning's save_last writes it only
    # when a best one is written, so it was the best again)
    last = ModelCheckpoint(dirpath=out / "checkpoints", filename="last", save_top_k=1)
    trainer = pl.Trainer(
        default_root_dir=out,
        max_epochs=config.max_epochs,
        max_time=timedelta(minutes=config.max_minutes) if config.max_minutes > 0 else None,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        callbacks=[
            best,
            last,
            EarlyStopping(monitor=config.monitor, mode="max", patience=config.patience),
            LearningRateMonitor(logging_interval="epoch"),
        ],
        logger=[
            CSVLogger(out, name="", version=""),
            TensorBoardLogger(out, name="tensorboard", version=""),
        ],
        log_every_n_steps=1,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        # The run folder already holds config.json; Lightning warns about any non-empty folder.
        warnings.filterwarnings("ignore", message="Experiment logs directory")
        trainer.fit(module, train_loader, val_loader)
    if trainer.global_rank != 0:
        return TrainResult(out, 0.0, 0, trainer.current_epoch, 0.0, 0.0)

    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)[
            "state_dict"
        ]
        module.load_state_dict(state)
    model = module.model.cpu().eval()
    plot_curves(out / "metrics.csv", out / "curves.png", config.monitor)
    onnx_path = export_onnx(
        model, out / "model.onnx", config.image_size, get_task(config.task).heads
    )
    check_set = SliceDataset(val_slices, preprocessing, rendered=True)
    check = np.stack([check_set.model_input(i)[0][None] for i in range(min(8, len(check_set)))])
    difference = onnx_max_difference(onnx_path, model, check, get_task(config.task).heads)
    minutes = (time.perf_counter() - started) / 60.0

    epochs = read_epochs(out / "metrics.csv")
    scores = epochs.get(config.monitor) or epochs.get("val_dice", {0: float("nan")})
    best_epoch = max(scores, key=scores.__getitem__)
    val_dice = epochs.get("val_dice", {best_epoch: float("nan")})
    result = TrainResult(
        out, val_dice[best_epoch], best_epoch, trainer.current_epoch, minutes, difference
    )
    card = model_card(config, dataset, model, result, onnx_path, preprocessing)
    card.write(out / CARD_NAME)
    (out / "train_result.json").write_text(json.dumps(asdict(result), indent=2, default=str) + "\n")
    quantize_run(out, data)  # model_int8.onnx: what lungseg ships (training.quantize)
    return result


def slices_used(config: TrainConfig, dataset: BuiltDataset) -> dict[str, dict[str, int]]:
    """Slices per source and split that training, validation and test use (train and val
    after ``max_slices_per_patient``)."""
    task = get_task(config.task)
    counts: dict[str, dict[str, int]] = {}
    for split in ("train", "val", "test"):
        rows = task.rows(dataset, split, config.include_flagged and split == "train")
        if split != "test" and config.max_slices_per_patient > 0:
            rows = spread_per_patient(rows, config.max_slices_per_patient)
        for row in rows:
            counts.setdefault(row.source, {}).setdefault(split, 0)
            counts[row.source][split] += 1
    return counts


def model_card(
    config: TrainConfig,
    dataset: BuiltDataset,
    model: torch.nn.Module,
    result: TrainResult,
    onnx_path: Path,
    preprocessing: Preprocessing,
) -> ModelCard:
    """What a user of the exported model needs to know (``inference.card``)."""
    task = get_task(config.task)
    counts = slices_used(config, dataset)
    build_config = json.loads((dataset.folder / "build_config.json").read_text())
    return ModelCard(
        name=f"lungseg-{config.task}-unet",
        lungseg_version=__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        task=config.task,
        description=task.spec.description,
        architecture={
            "name": config.architecture,
            "channels": list(config.channels),
            "num_res_units": config.num_res_units,
            "parameters": count_parameters(model),
        },
        preprocessing=preprocessing,
        classes=tuple(task.classes),
        heads=dict(task.heads or {}),
        training={
            "dataset": str(dataset.folder),
            "sources": build_config.get("sources"),
            "split_seed": build_config.get("seed"),
            "slices_per_source_and_split": counts,
            "config": asdict(config),
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "minutes": round(result.minutes, 1),
        },
        metrics={"val_dice_best": round(result.best_val_dice, 4)},
        onnx={
            "file": onnx_path.name,
            "sha256": sha256_of(onnx_path),
            "max_abs_difference_vs_pytorch": result.onnx_max_difference,
        },
    )
