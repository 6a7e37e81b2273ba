"""Does averaging the weights of several runs of one network help ("model soup")?

Every checkpoint given must be a continuation of the same network (the same
architecture, trained on from one start, as the runs of ``configs/joint-recovered-*``
are from ``runs/recovered-infection``): their weights are averaged uniformly (no
choice by a validation split, whose 6 typed slices pick by noise), the batch norms'
running statistics measured again on the calibration slices (96 training slices,
HU slices through the renderings in turn) unless ``--keep-norms``, and the result
written as a run (config, checkpoint, the first run's orientation head, a float
``model.onnx`` with its card) for ``lungseg evaluate``, ``lungseg orient`` and
``lungseg quantize``.

    .venv/bin/python benchmarks/weight_average.py runs/recovered-infection/checkpoints/best.ckpt \
        runs/joint-classdice3/checkpoints/{best,last}.ckpt ... --out runs/soup
    .venv/bin/lungseg evaluate --model runs/soup/model.onnx --data build/train-dataset \
        --split test --no-variants --out build/evaluation-soup
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from lungseg.core.files import sha256_of
from lungseg.dataset.store import BuiltDataset
from lungseg.training.config import TrainConfig
from lungseg.training.export import export_onnx, write_model_card
from lungseg.training.model import create_model
from lungseg.training.orientation import HEAD_FILE, OrientedNetwork, head_for
from lungseg.training.quantize import calibration_inputs


def average(checkpoints: list[Path]) -> dict[str, torch.Tensor]:
    """The uniform mean of the checkpoints' network weights and statistics."""
    states = [
        torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        for path in checkpoints
    ]
    mean: dict[str, torch.Tensor] = {}
    for key, first in states[0].items():
        if not key.startswith("model."):
            continue
        values = [state[key] for state in states]
        if first.is_floating_point():
            total = torch.stack([v.double() for v in values]).mean(0)
            mean[key.removeprefix("model.")] = total.to(first.dtype)
        else:  # counters (num_batches_tracked)
            mean[key.removeprefix("model.")] = first
    return mean


def measure_norms(network: torch.nn.Module, images: torch.Tensor, batch: int = 16) -> None:
    """Batch norms' running statistics as the plain mean over ``images``' batches."""
    norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative mean
    network.train()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            network(images[start : start + batch])
    for norm in norms:
        norm.momentum = 0.1
    network.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument(
        "--run",
        type=Path,
        help="the run whose config, card and orientation head are used "
        "(default: the first checkpoint's)",
    )
    parser.add_argument("--data", type=Path, default=Path("build/train-dataset"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keep-norms", action="store_true", help="average the statistics too")
    args = parser.parse_args()
    run = args.run or args.checkpoints[0].parents[1]
    config = TrainConfig.load(run / "config.json")
    card = json.loads((run / "model_card.json").read_text())
    network = create_model(config)
    network.load_state_dict(average(args.checkpoints))
    if not args.keep_norms:
        images = calibration_inputs(BuiltDataset(args.data), config)
        measure_norms(network, torch.from_numpy(images))
    head_file = run / "checkpoints" / HEAD_FILE
    exported_network: torch.nn.Module = network.eval()
    if head_file.is_file():  # a run oriented by `lungseg orient`
        head = head_for(config)
        head.load_state_dict(torch.load(head_file, map_location="cpu")["state_dict"])
        exported_network = OrientedNetwork(network, head).eval()

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    (out / "checkpoints").mkdir(parents=True)
    config.save(out / "config.json")
    state = {f"model.{k}": v for k, v in network.state_dict().items()}
    averaged_from = [str(path) for path in args.checkpoints]
    torch.save({"state_dict": state, "averaged": averaged_from}, out / "checkpoints" / "best.ckpt")
    if head_file.is_file():
        shutil.copy(head_file, out / "checkpoints" / HEAD_FILE)
    heads = card.get("output", {}).get("heads")
    heads = {k: (int(a), int(b)) for k, (a, b) in heads.items()} if heads else None
    exported = export_onnx(exported_network, out / "model.onnx", config.image_size, heads)
    card = {k: v for k, v in card.items() if k != "recovered"}
    card["onnx"] = {"file": exported.name, "sha256": sha256_of(exported)}
    card["averaged"] = {"checkpoints": averaged_from, "norms_measured": not args.keep_norms}
    write_model_card(out / "model_card.json", card)
    print(f"written {out}: the mean of {len(args.checkpoints)} checkpoints")


if __name__ == "__main__":
    main()
