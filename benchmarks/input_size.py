"""What does the model's input size cost in Dice, at best?

A perfect prediction made at S x S pixels must still come back to the slice's own
size. This passes each reference mask of a split through the same pre- and
post-processing resize the model uses (pad square, bilinear down to S, bilinear
back up, threshold 0.5) and prints the mean Dice against the original: the
ceiling any model of that input size can reach.

    .venv/bin/python benchmarks/input_size.py --data build/dataset [--split test]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lungseg.core.metrics import slice_scores
from lungseg.dataset.store import BuiltDataset
from lungseg.inference.preprocess import from_model_square, to_model_square

SIZES = (128, 192, 256, 384, 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    dataset = BuiltDataset(args.data)
    rows = dataset.select(args.split)
    sources = sorted({r.source for r in rows})
    print(
        f"Dice ceiling of a perfect prediction at each input size, {args.split} split of {args.data}"
    )
    print("size  " + "  ".join(f"{s:>18s}" for s in sources))
    for size in SIZES:
        means = []
        for source in sources:
            scores = []
            for row in (r for r in rows if r.source == source):
                truth = dataset.load(row).lung != 0
                square, placement = to_model_square(truth.astype(np.float32), size)
                back = from_model_square(square[np.newaxis], placement)[0] > 0.5
                scores.append(slice_scores(back, truth)["dice"])
            means.append(float(np.mean(scores)))
        print(f"{size:4d}  " + "  ".join(f"{m:18.4f}" for m in means))


if __name__ == "__main__":
    main()
