"""Split by patient: reproducible from a seed, no patient in two splits."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

SPLITS = ("train", "val", "test")


def split_patients(
    patients: Iterable[str], fractions: tuple[float, float, float], seed: int
) -> dict[str, str]:
    """Assign each patient to ``train``, ``val`` or ``test``.

    The patients are sorted, then shuffled with ``seed``, so the same ids and seed
    always give the same split whatever order they were found in. Validation and
    test get ``round(n * fraction)`` patients, at least one each when there are
    three or more patients and the fraction is above zero; train gets the rest.

    Args:
        patients: patient ids (duplicates are ignored).
        fractions: train, val, test shares; they must sum to 1.
        seed: random seed.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    unique = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = [unique[i] for i in order]
    n = len(shuffled)
    counts = [round(n * f) for f in fractions[1:]]
    if n >= 3:
        counts = [max(c, 1) if f > 0 else c for c, f in zip(counts, fractions[1:], strict=True)]
    n_val, n_test = counts
    n_val = min(n_val, n)
    n_test = min(n_test, n - n_val)
    assignment = {}
    for index, patient in enumerate(shuffled):
        if index < n_test:
            assignment[patient] = "test"
        elif index < n_test + n_val:
            assignment[patient] = "val"
        else:
            assignment[patient] = "train"
    return assignment
