"""How fast is `lungseg predict`, end to end, against a network of lungmask's size?

Prints, measured in one run on this machine:
  * ms per 512x512 slice end to end (read the TIFF, pre-process, model, post-process,
    write mask and overlay PNGs), over real finding-lungs slices;
  * seconds and slices per second for the 64-slice DICOM series (read, segment,
    write NIfTI and montage), and its lung volumes;
  * a long list (the folder of every finding-lungs slice, 267) through `lungseg
    predict` from the command line, lungs + infection: worker processes, one per core
    (``inference.batch.run_batch`` with ``processes``), against one process (--processes 0);
  * the same for a reference network of lungmask's size (a 5-level U-Net starting at
    64 filters on 256x256 input, 31 M parameters, random weights) run through the very
    same pipeline, and the ratio.

Needs ../shared/data and the training extras (torch builds the reference network).

    .venv/bin/python benchmarks/inference_speed.py [--slices 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import BasicUNet

from lungseg.core.memory import keep_freed_memory
from lungseg.inference import Predictor
from lungseg.inference.batch import BatchSettings, output_stem, run_batch
from lungseg.inference.encode import write_prediction
from lungseg.training.export import export_onnx

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def reference_model(path: Path) -> Path:
    """lungmask-sized U-Net (31 M parameters) at 256 px, random weights, as ONNX."""
    torch.manual_seed(0)
    network = BasicUNet(
        spatial_dims=2, in_channels=1, out_channels=2, features=(64, 128, 256, 512, 1024, 64)
    )
    return export_onnx(network.eval(), path, 256)


def measure(predictor: Predictor, slices: list[Path], series: Path, out: Path) -> dict[str, float]:
    predictor.predict(slices[0])  # warm-up
    per_slice = []  # one slice at a time, read to written
    for path in slices:
        started = time.perf_counter()
        write_prediction(predictor.predict(path), out, output_stem(path))
        per_slice.append((time.perf_counter() - started) * 1000.0)
    started = (
        time.perf_counter()
    )  # as `lungseg predict` runs a list: writing overlaps the next slice
    outcomes = list(run_batch(BatchSettings(out=out), slices, predictor=predictor))
    assert all(o.error is None for o in outcomes)
    pipelined = (time.perf_counter() - started) * 1000.0 / len(slices)
    squares = np.random.default_rng(0).random(
        (1, predictor.model.size, predictor.model.size), dtype=np.float32
    )
    predictor.model.scores(squares)
    started = time.perf_counter()
    for _ in range(10):
        predictor.model.scores(squares)
    model_ms = (time.perf_counter() - started) * 100.0
    started = time.perf_counter()
    volume = predictor.predict(series)
    write_prediction(volume, out, "series")
    seconds = time.perf_counter() - started
    return {
        "ms_mean": statistics.mean(per_slice),
        "ms_median": statistics.median(per_slice),
        "ms_pipelined": pipelined,
        "model_ms": model_ms,
        "series_s": seconds,
        "series_slices_per_s": volume.lung.shape[0] / seconds,
        "volume_l": volume.measures["total"] / 1000.0,
        "right_l": volume.measures["right"] / 1000.0,
        "left_l": volume.measures["left"] / 1000.0,
    }


def long_list(folder: Path, out: Path) -> tuple[float, float]:
    """ms per slice for a long list of pictures, as `lungseg predict FOLDER` runs it from
    the command line (starting included): one process, then a worker per core."""
    count = len(list(folder.glob("*.tif")))
    times = []
    for processes in ("0", str(max(os.cpu_count() or 1, 2))):
        command = [sys.executable, "-m", "lungseg", "predict", str(folder), "--quiet"]
        started = time.perf_counter()
        subprocess.run(
            [*command, "--out", str(out / processes), "--processes", processes],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        times.append((time.perf_counter() - started) * 1000.0 / count)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--slices", type=int, default=30, help="finding-lungs slices to time")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    slices = sorted((args.data / "finding-lungs-ct" / "2d_images").glob("*.tif"))[: args.slices]
    series = args.data / "chest-ct-dicom" / "Lung_Dx-A0001"
    if not slices or not series.is_dir():
        raise SystemExit(f"needs the real data in {args.data}")
    keep_freed_memory()  # as `lungseg predict` does
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        predictor = Predictor(
            infection=False
        )  # lung against lung: the reference has no infection output
        params = predictor.model.card.architecture.get("parameters", 0) / 1e6
        shipped = measure(predictor, slices, series, work / "a")
        with_infection = measure(Predictor(), slices, series, work / "c")
        every = args.data / "finding-lungs-ct" / "2d_images"
        one_process, workers = long_list(every, work / "long")
        reference = measure(
            Predictor(reference_model(work / "reference.onnx"), infection=False),
            slices,
            series,
            work / "b",
        )
    print(
        f"{len(slices)} slices of 512x512 (finding-lungs TIFF) and the 64-slice DICOM series; "
        "onnxruntime on all cores"
    )
    print(
        "ms per slice: one at a time (read to written) | as `lungseg predict` runs a list | model alone"
    )
    print(
        "model                            one-at-a-time  median  list   model   series s  slices/s"
    )
    for name, figures in (
        (f"lungseg lungs (shipped, {params:.1f} M)", shipped),
        ("lungseg lungs + infection", with_infection),
        ("reference (lungmask size, 31 M)", reference),
    ):
        print(
            f"{name:32s} {figures['ms_mean']:13.1f} {figures['ms_median']:7.1f} {figures['ms_pipelined']:6.1f} "
            f"{figures['model_ms']:6.1f} {figures['series_s']:10.2f} {figures['series_slices_per_s']:9.1f}"
        )
    print(
        "speed-up against the reference: "
        f"{reference['ms_mean'] / shipped['ms_mean']:.1f}x one at a time, "
        f"{reference['ms_pipelined'] / shipped['ms_pipelined']:.1f}x for a list, "
        f"{reference['model_ms'] / shipped['model_ms']:.1f}x for the model alone, "
        f"{reference['series_s'] / shipped['series_s']:.1f}x for the series"
    )
    print(
        f"`lungseg predict` on a folder of {len(list(every.glob('*.tif')))} slices, lungs + "
        f"infection, from the command line: {workers:.1f} ms a slice with a worker process "
        f"per core, {one_process:.1f} ms in one process (--processes 0)"
    )
    print(
        f"series lung volume (shipped model): {shipped['volume_l']:.2f} L "
        f"(right {shipped['right_l']:.2f} L, left {shipped['left_l']:.2f} L)"
    )


if __name__ == "__main__":
    main()
