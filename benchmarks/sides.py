"""Right/left sides over the 8 orientations, with and without test-time mirroring.

For every test slice of a built dataset and each of the 8 orientations, the share of
slices whose sides are right (as ``lungseg evaluate`` counts them), once with one model
pass and once averaging the probabilities with those of the mirrored picture (turned
back), the option measured for docs/training.md and not shipped (two model passes).

    .venv/bin/python benchmarks/sides.py [--model M.onnx] [--data build/train-dataset]
"""

from __future__ import annotations

import argparse

import numpy as np

from lungseg.core.labels import LUNG_LEFT, LUNG_RIGHT
from lungseg.core.masks import reference_sides, side_agreement
from lungseg.dataset.store import BuiltDataset
from lungseg.evaluation.evaluate import SIDE_OK
from lungseg.imaging import Intensity
from lungseg.imaging.orientation import DIHEDRAL, apply_dihedral, dihedral_name, undo_dihedral
from lungseg.inference.model import SegmentationModel, postprocess_slice
from lungseg.inference.preprocess import from_model_square

TO_LABELS = np.array([0, LUNG_RIGHT, LUNG_LEFT], np.uint8)


def sides(model: SegmentationModel, image: np.ndarray, intensity: Intensity, mirror: bool):
    squares, placements = model.prepare([image], [intensity])
    probabilities = model.scores(squares)[0]
    if mirror:  # the patient's right stays right: average with the mirrored answer, turned back
        mirrored = model.scores(np.ascontiguousarray(squares[:, :, ::-1]))[0]
        probabilities = (probabilities + mirrored[:, :, ::-1]) / 2
    raw = TO_LABELS[from_model_square(probabilities, placements[0]).argmax(axis=0)]
    return postprocess_slice(raw, image, intensity)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="ONNX lung model (default: shipped)")
    parser.add_argument("--data", default="build/train-dataset")
    args = parser.parse_args()
    model = SegmentationModel(args.model)
    dataset = BuiltDataset(args.data)
    print("source, test-time mirroring: % of slices with right sides per orientation")
    print(" " * 34 + " ".join(f"{dihedral_name(t, f):>14}" for t, f in DIHEDRAL))
    for source in sorted({r.source for r in dataset.select("test")}):
        rows = [r for r in dataset.select("test") if r.source == source]
        for mirror in (False, True):
            right = np.zeros(len(DIHEDRAL))
            for row in rows:
                record = dataset.load(row)
                reference = reference_sides(record.lung)
                for index, (turns, flip) in enumerate(DIHEDRAL):
                    turned = apply_dihedral(record.image, turns, flip)
                    found = sides(model, turned, record.intensity, mirror)
                    back = undo_dihedral(found, turns, flip)
                    right[index] += side_agreement(back, reference) >= SIDE_OK
            label = f"{source} ({len(rows)}), {'mirrored' if mirror else 'one pass'}"
            print(f"{label:<34}" + " ".join(f"{100 * r / len(rows):13.1f}%" for r in right))


if __name__ == "__main__":
    main()
