"""What the work around the model costs per 512x512 slice, against the simpler way.

Over real finding-lungs slices and the shipped one-pass network, prints ms per slice:
  * the decision at slice size: lungseg's window resize (`decision_at_slice_size`)
    against resizing every class over the whole square (`from_model_square`, argmax),
    and how many pixels differ;
  * the overlay PNG: lungseg's writer (unfiltered rows, ISA-L deflate) against the same
    rows deflated by zlib at level 1 (the writer before) and Pillow's (level 1, its
    filters), and the files' sizes;
  * the lung mask PNG (palette): lungseg's writer against Pillow's;
  * the overlay with its labels (`annotated_overlay`);
  * what decides where to look at slice size: an argmax across the classes against a
    maximum and a comparison (the same answer);
  * the split of touching lungs (`core.masks.split_touching`) against its plain form
    (`tests/inference/test_same_masks.py`), on the regions the real series' upper
    slices give it.

    .venv/bin/python benchmarks/picture_time.py [--slices 20]
"""

from __future__ import annotations

import argparse
import io
import statistics
import struct
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from lungseg.core.memory import keep_freed_memory
from lungseg.imaging import read_image
from lungseg.inference import Predictor
from lungseg.inference.encode import annotated_overlay, lung_png, png_bytes
from lungseg.inference.preprocess import decision_at_slice_size, from_model_square

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def per_call_ms(work: Callable[[], object], repeats: int = 5) -> float:
    work()
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - started) * 1000.0 / repeats


def pillow_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def zlib_png(array: np.ndarray) -> bytes:
    """The writer before: unfiltered rows, zlib level 1."""
    rows, cols = array.shape[:2]
    scanlines = np.zeros((rows, 1 + array[0].size), np.uint8)
    scanlines[:, 1:] = array.reshape(rows, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", cols, rows, 8, 2, 0, 0, 0)
    idat = zlib.compress(scanlines.data, 1)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def pillow_mask_png(labels: np.ndarray) -> bytes:
    image = Image.fromarray(labels, mode="P")
    image.putpalette([0, 0, 0, 230, 75, 60, 50, 130, 230])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--slices", type=int, default=20)
    args = parser.parse_args()
    paths = sorted((DATA / "finding-lungs-ct" / "2d_images").glob("*.tif"))[: args.slices]
    if not paths:
        raise SystemExit(f"needs the real data in {DATA}")
    keep_freed_memory()  # as `lungseg predict` does
    predictor = Predictor()
    model = predictor.model
    figures: dict[str, list[float]] = {}
    differing = 0
    sizes = {"lungseg": 0, "zlib": 0, "pillow": 0}
    for path in paths:
        image = read_image(path)
        squares, placements = model.prepare([image.array], [image.intensity])
        probabilities = model.scores(squares)[0]
        heads = [probabilities[a:b] for a, b in model.heads.values()]
        placement = placements[0]

        def window() -> list[np.ndarray]:
            return [decision_at_slice_size(p, placement) for p in heads]  # noqa: B023

        def whole() -> list[np.ndarray]:
            return [from_model_square(p, placement).argmax(axis=0) for p in heads]  # noqa: B023

        figures.setdefault("decision, window", []).append(per_call_ms(window))
        figures.setdefault("decision, whole square", []).append(per_call_ms(whole))
        differing += sum(int((a != b).sum()) for a, b in zip(window(), whole(), strict=True))
        prediction = predictor.segment(image)
        overlay = annotated_overlay(prediction)
        figures.setdefault("overlay with labels", []).append(
            per_call_ms(lambda: annotated_overlay(prediction))  # noqa: B023
        )
        figures.setdefault("overlay PNG, lungseg", []).append(
            per_call_ms(lambda: png_bytes(overlay))  # noqa: B023
        )
        figures.setdefault("overlay PNG, zlib level 1", []).append(
            per_call_ms(lambda: zlib_png(overlay))  # noqa: B023
        )
        figures.setdefault("overlay PNG, Pillow", []).append(
            per_call_ms(lambda: pillow_png(overlay))  # noqa: B023
        )
        figures.setdefault("mask PNG, lungseg", []).append(
            per_call_ms(lambda: lung_png(prediction.lung))  # noqa: B023
        )
        figures.setdefault("mask PNG, Pillow", []).append(
            per_call_ms(lambda: pillow_mask_png(prediction.lung))  # noqa: B023
        )
        sizes["lungseg"] += len(png_bytes(overlay))
        sizes["zlib"] += len(zlib_png(overlay))
        sizes["pillow"] += len(pillow_png(overlay))
    print(f"{len(paths)} finding-lungs slices of 512x512, {model.path.name} ({len(heads)} heads)")
    for name, values in figures.items():
        print(f"{name:26s} {statistics.median(values):6.2f} ms (median per slice)")
    print(f"pixels where the window and the whole-square decision differ: {differing}")
    print(
        f"overlay PNG size, mean: lungseg {sizes['lungseg'] / len(paths) / 1000:.0f} kB, "
        f"zlib level 1 {sizes['zlib'] / len(paths) / 1000:.0f} kB, "
        f"Pillow {sizes['pillow'] / len(paths) / 1000:.0f} kB"
    )
    found_ms: dict[str, list[float]] = {"argmax across classes": [], "maximum, comparison": []}
    for head in heads:
        found_ms["argmax across classes"].append(per_call_ms(lambda h=head: h.argmax(axis=0) != 0))
        found_ms["maximum, comparison"].append(per_call_ms(lambda h=head: h[1:].max(axis=0) > h[0]))
    for name, values in found_ms.items():
        print(f"where anything is found, {name}: {statistics.median(values):.2f} ms a head")
    split_times(predictor)


def split_times(predictor: Predictor) -> None:
    """The touching-lungs split, as it is and in its plain form, on the regions that the
    real series' upper slices (where the lungs touch in front) give it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from inference.test_same_masks import split_touching_plainly

    from lungseg.core import masks

    regions: list[np.ndarray] = []
    split = masks.split_touching

    def kept(region: np.ndarray) -> np.ndarray | None:
        regions.append(region.copy())
        return split(region)

    masks.split_touching = kept
    try:
        series = sorted((DATA / "chest-ct-dicom" / "Lung_Dx-A0001").glob("*.dcm"))
        for path in series[20:32]:
            predictor.predict(path)
    finally:
        masks.split_touching = split

    def best(work: Callable[[], object]) -> float:
        return min(per_call_ms(work, 1) for _ in range(5))

    fast = [best(lambda r=region: split(r)) for region in regions]
    plain = [best(lambda r=region: split_touching_plainly(r)) for region in regions]
    same = all(
        (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
        for a, b in ((split(r), split_touching_plainly(r)) for r in regions)
    )
    print(
        f"touching lungs split, {len(regions)} regions: {statistics.mean(fast):.1f} ms a region "
        f"(plain form {statistics.mean(plain):.1f} ms; best of 5 each), the same parts: {same}"
    )


if __name__ == "__main__":
    main()
