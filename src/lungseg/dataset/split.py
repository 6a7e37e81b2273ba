"""Split by patient: reproducible from a seed, no patient in two splits."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lungseg.errors import DatasetError

SPLITS = ("train", "val", "test")


MIN_TEST_PATIENTS = 2
"""A source with at least three times this many patients tests on at least this many."""


def check_fractions(fractions: tuple[float, ...]) -> None:
    """Train, val and test shares: three non-negative numbers summing to 1.

    Raises:
        DatasetError: otherwise.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DatasetError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )


def split_patients(
    patients: Iterable[str],
    fractions: tuple[float, float, float],
    seed: int,
    min_test: int = MIN_TEST_PATIENTS,
) -> dict[str, str]:
    """Assign each patient to ``train``, ``val`` or ``test``.

    The patients are sorted, then shuffled with ``seed``, so the same ids and seed
    always give the same split whatever order they were found in. Validation and
    test get ``round(n * fraction)`` patients, at least one each when there are
    three or more patients and the fraction is above zero, and test at least
    ``min_test`` where there are ``3 * min_test`` patients or more (one test patient
    says little); train gets the rest.

    Args:
        patients: patient ids (duplicates are ignored).
        fractions: train, val, test shares; they must sum to 1.
        seed: random seed.
    """
    check_fractions(fractions)
    unique = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = [unique[i] for i in order]
    n = len(shuffled)
    counts = [round(n * f) for f in fractions[1:]]
    if n >= 3:
        counts = [max(c, 1) if f > 0 else c for c, f in zip(counts, fractions[1:], strict=True)]
    n_val, n_test = counts
    if fractions[2] > 0 and n >= 3 * min_test:
        n_test = max(n_test, min_test)
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
