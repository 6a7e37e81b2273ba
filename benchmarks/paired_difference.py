"""Is one model's infection Dice really better than another's on the same test slices?

Reads two ``lungseg evaluate`` report folders (``infection/infection_per_slice.csv``),
pairs their slices, and prints per source: both means, how many slices got better and
worse, and the mean difference with a 95 % bootstrap interval over slices (slices of
one patient are not independent, so for the clahe test patients, two patients, the
interval is narrower than it should be).

    .venv/bin/python benchmarks/paired_difference.py build/evaluation-shipped build/evaluation-flips-h
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np


def per_slice(report: Path, column: str) -> dict[str, tuple[str, float]]:
    path = report / "infection" / "infection_per_slice.csv"
    with path.open(newline="") as handle:
        return {
            row["slice_id"]: (row["source"], float(row[column])) for row in csv.DictReader(handle)
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("before", type=Path, help="report folder of the first model")
    parser.add_argument("after", type=Path, help="report folder of the second model")
    parser.add_argument("--column", default="dice", help="per-slice column (default dice)")
    parser.add_argument("--resamples", type=int, default=5000)
    args = parser.parse_args()
    before, after = per_slice(args.before, args.column), per_slice(args.after, args.column)
    sources = sorted({source for source, _ in before.values()})
    rng = np.random.default_rng(0)
    for source in sources:
        ids = [
            key
            for key, (where, value) in before.items()
            if where == source
            and key in after
            and not math.isnan(value)
            and not math.isnan(after[key][1])
        ]
        if not ids:
            continue
        first = np.array([before[key][1] for key in ids])
        second = np.array([after[key][1] for key in ids])
        change = second - first
        means = [
            change[rng.integers(0, len(change), len(change))].mean() for _ in range(args.resamples)
        ]
        low, high = np.percentile(means, [2.5, 97.5])
        print(
            f"{source}: {len(ids)} slices, {args.column} {first.mean():.4f} -> {second.mean():.4f}; "
            f"better on {(change > 0).sum()}, worse on {(change < 0).sum()}; "
            f"difference {change.mean():+.4f} (95 % bootstrap {low:+.4f} to {high:+.4f})"
        )


if __name__ == "__main__":
    main()
