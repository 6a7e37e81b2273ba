"""Milliseconds per 256 px slice for ONNX models alone, timed in turn in one run.

Compares models on the same machine state (the day-to-day speed of a shared machine
varies): for instance the shipped lung model against an earlier one from git,

    git show 6e66ca8:src/lungseg/models/lung_unet.onnx > /tmp/previous.onnx
    .venv/bin/python benchmarks/model_time.py /tmp/previous.onnx src/lungseg/models/lung_unet.onnx

It prints the processor time beside the wall time: what a slice costs the machine when
every core is busy with other slices (a list through worker processes).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lungseg.inference.model import SegmentationModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the models this often")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all)")
    args = parser.parse_args()
    models = [SegmentationModel(path, threads=args.threads) for path in args.models]
    for _ in range(args.rounds):
        for path, model in zip(args.models, models, strict=True):
            square = np.random.default_rng(0).random((1, model.size, model.size), np.float32)
            for _ in range(5):
                model.scores(square)
            started, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.repeats):
                model.scores(square)
            ms = (time.perf_counter() - started) / args.repeats * 1000
            cpu_ms = (time.process_time() - cpu) / args.repeats * 1000
            print(
                f"{path}: {ms:.1f} ms per slice, {cpu_ms:.1f} ms of processor time over all "
                f"cores ({len(model.classes)} classes)"
            )


if __name__ == "__main__":
    main()
