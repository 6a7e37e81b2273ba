"""How often a network's orientation head finds which way a picture is turned.

Every slice of a split, in each of the 8 flips and quarter turns (as `lungseg
evaluate` makes them), through the model's orientation head, decided three ways:
the head's one answer (its most likely turn), the shipped rule (an answer below
``TURN_SURE`` checked against the head's answer on the mirror image), and the mirror
image asked about every picture. One line per source: the share of pictures whose
turn is found. The shipped rule was chosen with this on the validation split.

    .venv/bin/python benchmarks/orientation.py [--model M.onnx] [--data build/train-dataset] [--split val]
"""

from __future__ import annotations

import argparse

import numpy as np

from lungseg.dataset.store import BuiltDataset
from lungseg.evaluation.evaluate import variants_of
from lungseg.imaging.orientation import DIHEDRAL
from lungseg.inference.model import TURN_SURE, SegmentationModel, turn_with_mirror


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="an ONNX model with an orientation head")
    parser.add_argument("--data", default="build/train-dataset")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    model = SegmentationModel(args.model)
    if not model.orients:
        raise SystemExit(f"{model.path} has no orientation head (lungseg orient adds one)")
    dataset = BuiltDataset(args.data)
    found: dict[str, list[tuple[bool, bool, bool]]] = {}
    for row in dataset.select(args.split):
        record = dataset.load(row)
        cases = [v for v in variants_of(record.image, record.intensity) if v.kind == "orientation"]
        squares, _ = model.prepare([v.image for v in cases], [v.intensity for v in cases])
        _, answers = model.run(squares)
        _, mirrored = model.run(np.ascontiguousarray(squares[:, :, ::-1]))
        assert answers is not None and mirrored is not None
        for case, answer, second in zip(cases, answers, mirrored, strict=True):
            truth = DIHEDRAL.index((case.turns, case.flip))
            both = turn_with_mirror(answer, second)
            one = int(np.argmax(answer))
            shipped = one if answer[one] >= TURN_SURE else both
            found.setdefault(row.source, []).append((one == truth, shipped == truth, both == truth))
    print(f"{args.split} split, {model.path}: pictures whose turn is found")
    print(f"{'source':<24} {'pictures':>8} {'one answer':>11} {'shipped':>8} {'always both':>12}")
    every = [item for items in found.values() for item in items]
    for source, items in [*sorted(found.items()), ("all", every)]:
        shares = np.mean(np.array(items, dtype=float), axis=0)
        print(
            f"{source:<24} {len(items):>8} {100 * shares[0]:>10.1f}% {100 * shares[1]:>7.1f}% "
            f"{100 * shares[2]:>11.1f}%"
        )


if __name__ == "__main__":
    main()
