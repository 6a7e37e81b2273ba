"""Which filter counts? Train each candidate U-Net for the same number of epochs and compare.

Prints, per candidate: parameters, seconds per epoch, best validation Dice within
the epochs, and ms per 256x256 slice through the exported ONNX model (batch 1).
The cosine schedule runs over the same epochs for every candidate, so the
comparison is fair at equal epochs (not at equal time: see s/epoch).

    .venv/bin/python benchmarks/filters.py --data build/train-dataset [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lungseg.inference.model import SegmentationModel
from lungseg.training.config import TrainConfig
from lungseg.training.train import train

CANDIDATES = {
    "8..128": (8, 16, 32, 64, 128),
    "16..256": (16, 32, 64, 128, 256),
    "32..512": (32, 64, 128, 256, 512),
}


def onnx_ms_per_slice(path: Path, size: int, repeats: int = 20) -> float:
    model = SegmentationModel(path)
    squares = np.random.default_rng(0).random((1, size, size), dtype=np.float32)
    model.scores(squares)
    start = time.perf_counter()
    for _ in range(repeats):
        model.scores(squares)
    return (time.perf_counter() - start) / repeats * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--only", nargs="*", choices=list(CANDIDATES), help="candidates to run")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, channels in CANDIDATES.items():
            if args.only and name not in args.only:
                continue
            config = TrainConfig(
                channels=channels, max_epochs=args.epochs, patience=args.epochs, max_minutes=0
            )
            started = time.perf_counter()
            result = train(config, args.data, Path(scratch) / name)
            seconds = time.perf_counter() - started
            card = json.loads((Path(scratch) / name / "model_card.json").read_text())
            ms = onnx_ms_per_slice(Path(scratch) / name / "model.onnx", config.image_size)
            rows.append(
                (
                    name,
                    card["architecture"]["parameters"],
                    seconds / args.epochs,
                    result.best_val_dice,
                    ms,
                )
            )
    print(f"\n{args.epochs} epochs each on {args.data}")
    print("filters     params    s/epoch  best val Dice  ONNX ms/slice")
    for name, params, per_epoch, dice, ms in rows:
        print(f"{name:10s} {params / 1e6:6.2f}M  {per_epoch:8.1f}  {dice:13.4f}  {ms:13.1f}")


if __name__ == "__main__":
    main()
