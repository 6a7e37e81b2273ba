"""Do the shipped 8-bit models compute the same on this processor, and at what cost?

onnxruntime runs uint8 activations x int8 weights with ``vpmaddubsw`` on x86, which
saturates at 16 bits where the processor lacks VNNI (``training.quantize``). For each
shipped model this prints, over real slices of every set (batch 1):
  * ms per 256 px slice and the share of pixels whose decision (argmax per head)
    equals the model's own arithmetic (the same graph unfused: dequantise, convolve
    in float), for
      - the shipped file (weights stored as uint8, zero point 128),
      - the same weights stored as int8 (as shipped before),
      - the unfused graph itself;
  * whether this processor has VNNI (numpy's and /proc/cpuinfo's flags).

    .venv/bin/python benchmarks/int8_kernels.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from lungseg.imaging import read_image
from lungseg.inference.model import SHIPPED_MODEL, SegmentationModel
from lungseg.training.quantize import UNSIGNED_ZERO_POINT

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def signed_weights(source: Path, target: Path) -> Path:
    """The model with its uint8 weights stored as int8 again (zero point 0)."""
    model = onnx.load(str(source))
    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    for node in model.graph.node:
        weights = constants.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if weights is None or weights.data_type != onnx.TensorProto.UINT8:
            continue
        zero = constants[node.input[2]]
        if not (numpy_helper.to_array(zero) == UNSIGNED_ZERO_POINT).all():
            continue  # an activation's zero point, not a weight's
        for tensor in (weights, zero):
            shifted = numpy_helper.to_array(tensor).astype(np.int16) - UNSIGNED_ZERO_POINT
            tensor.CopyFrom(numpy_helper.from_array(shifted.astype(np.int8), tensor.name))
    onnx.save(model, str(target))
    return target


def vnni() -> str:
    from numpy._core._multiarray_umath import __cpu_features__ as features

    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else []
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


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    paths = (
        sorted((DATA / "finding-lungs-ct" / "2d_images").glob("*.tif"))[::20]
        + sorted((DATA / "medseg-covid-98" / "images").glob("*.png"))[::10]
        + sorted((DATA / "covid19-ct-seg-clahe" / "images").glob("*.png"))[::80]
    )
    print(f"VNNI on this processor: {vnni()}; {len(paths)} real slices, batch 1")
    scratch = Path(tempfile.mkdtemp(prefix="lungseg-int8-"))
    for name in ("lung_unet.onnx", "infection_unet.onnx"):
        shipped = SHIPPED_MODEL.with_name(name)
        model = SegmentationModel(shipped)
        images = [read_image(p) for p in paths]
        squares = model.prepare([i.array for i in images], [i.intensity for i in images])[0]
        inputs = squares[:, np.newaxis].astype(np.float32)
        variants = {
            "shipped (uint8 weights)": session(shipped, fused=True),
            "int8 weights": session(signed_weights(shipped, scratch / name), fused=True),
            "unfused (the reference)": session(shipped, fused=False),
        }
        answers, times = {}, {}
        for label, runner in variants.items():
            runner.run(None, {model.input_name: inputs[:1]})
            for _ in range(args.rounds):
                started = time.perf_counter()
                out = [runner.run(None, {model.input_name: x[None]})[0] for x in inputs]
                times.setdefault(label, []).append(
                    (time.perf_counter() - started) * 1000 / len(inputs)
                )
            answers[label] = np.concatenate(out)
        reference = answers["unfused (the reference)"]
        print(f"\n{name}")
        for label, scores in answers.items():
            same = [
                (scores[:, a:b].argmax(1) == reference[:, a:b].argmax(1)).mean() * 100
                for a, b in model.heads.values()
            ]
            heads = ", ".join(f"{h} {s:.2f} %" for h, s in zip(model.heads, same, strict=True))
            ms = " / ".join(f"{t:.1f}" for t in times[label])
            print(f"  {label:26s} {ms} ms   decisions as the reference: {heads}")


if __name__ == "__main__":
    main()
