"""Do 8-bit models compute on this processor what they say, and how fast?

onnxruntime multiplies uint8 activations by int8 weights with ``vpmaddubsw`` on x86,
which saturates at 16 bits where the processor lacks VNNI (``training.weights``).
For each model given (by default the shipped two), over real slices of every set,
batch 1, this prints:
  * ms per 256 px slice as lungseg runs it (onnxruntime's fused integer kernels);
  * the share of pixels whose decision (argmax per head) equals the model's own
    arithmetic: the same graph run unfused (dequantise, convolve in float), where
    nothing can saturate;
  * the same share against the first model's arithmetic (give the 8-bit original
    first to see what a re-quantisation changed);
and whether this processor has VNNI.

    .venv/bin/python benchmarks/int8_kernels.py [MODEL.onnx ...] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lungseg.imaging import read_image
from lungseg.inference.model import SHIPPED_INFECTION_MODEL, SHIPPED_MODEL, SegmentationModel

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def vnni() -> str:
    from numpy._core._multiarray_umath import __cpu_features__ as features

    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.is_file() else []
    found = [f for f in ("avx512_vnni", "avx_vnni") if f in flags]
    if features.get("AVX512VNNI"):
        found.append("numpy: AVX512VNNI")
    if found:
        return ", ".join(sorted(set(found)))
    return "none (AVX2 only)" if features.get("AVX2") else "none, no AVX2 either"


def session(path: Path, fused: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if not fused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def answers(runner: ort.InferenceSession, name: str, inputs: np.ndarray) -> np.ndarray:
    return np.concatenate([runner.run(None, {name: x[np.newaxis]})[0] for x in inputs])


def same(a: np.ndarray, b: np.ndarray, heads: dict[str, tuple[int, int]]) -> str:
    shares = {
        head: (a[:, s:e].argmax(1) == b[:, s:e].argmax(1)).mean() * 100
        for head, (s, e) in heads.items()
    }
    return ", ".join(f"{head} {share:.2f} %" for head, share in shares.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    models = args.models or [SHIPPED_MODEL, SHIPPED_INFECTION_MODEL]
    paths = (
        sorted((DATA / "finding-lungs-ct" / "2d_images").glob("*.tif"))[::20]
        + sorted((DATA / "medseg-covid-98" / "images").glob("*.png"))[::10]
        + sorted((DATA / "covid19-ct-seg-clahe" / "images").glob("*.png"))[::80]
    )
    images = [read_image(p) for p in paths]
    print(f"VNNI on this processor: {vnni()}; {len(paths)} real slices, batch 1")
    first: np.ndarray | None = None
    for path in models:
        model = SegmentationModel(path)
        squares = model.prepare([i.array for i in images], [i.intensity for i in images])[0]
        inputs = squares[:, np.newaxis].astype(np.float32)
        fused = session(path, fused=True)
        fused.run(None, {model.input_name: inputs[:1]})
        times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            got = answers(fused, model.input_name, inputs)
            times.append((time.perf_counter() - started) * 1000 / len(inputs))
        own = answers(session(path, fused=False), model.input_name, inputs)
        first = own if first is None else first
        print(f"\n{path}: {' / '.join(f'{t:.1f}' for t in times)} ms a slice")
        print(f"  decisions as its own arithmetic:         {same(got, own, model.heads)}")
        if first.shape == own.shape and first is not own:
            print(f"  decisions as the first model's arithmetic: {same(got, first, model.heads)}")


if __name__ == "__main__":
    main()
