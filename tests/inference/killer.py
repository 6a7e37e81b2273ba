"""A cohort task that kills its Dask worker on one scan (importable by the workers)."""

from __future__ import annotations

import os

from lungseg.inference.batch import BatchSettings
from lungseg.inference.cohort import segment_one


def kill_on_poison(path: str, stem: str, settings: BatchSettings) -> dict[str, str]:
    if "poison" in path:
        os._exit(1)  # as the out-of-memory killer would
    return segment_one(path, stem, settings)
