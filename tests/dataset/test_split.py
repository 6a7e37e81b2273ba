from __future__ import annotations

import pytest

from lungseg.dataset.split import split_patients


def test_split_is_reproducible_and_order_independent() -> None:
    patients = [f"p{i}" for i in range(40)]
    first = split_patients(patients, (0.7, 0.15, 0.15), seed=3)
    again = split_patients(list(reversed(patients)), (0.7, 0.15, 0.15), seed=3)
    assert first == again
    assert first != split_patients(patients, (0.7, 0.15, 0.15), seed=4)


def test_split_sizes_follow_the_fractions() -> None:
    split = split_patients([f"p{i}" for i in range(100)], (0.6, 0.25, 0.15), seed=0)
    counts = {name: list(split.values()).count(name) for name in ("train", "val", "test")}
    assert counts == {"train": 60, "val": 25, "test": 15}


def test_small_sets_still_get_one_val_and_one_test_patient() -> None:
    split = split_patients(["a", "b", "c"], (0.8, 0.1, 0.1), seed=0)
    assert sorted(split.values()) == ["test", "train", "val"]


def test_duplicates_are_one_patient() -> None:
    assert len(split_patients(["a", "a", "b"], (1.0, 0.0, 0.0), seed=0)) == 2


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.5), (1.2, -0.1, -0.1), (0.5, 0.5)])
def test_bad_fractions_are_refused(fractions) -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_patients(["a"], fractions, seed=0)
