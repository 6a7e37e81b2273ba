"""Stage 1: sources, split, quality checks, storage and report of the training set."""

from __future__ import annotations

from lungseg.dataset.build import build_dataset
from lungseg.dataset.config import BuildConfig, BuildSummary
from lungseg.dataset.sources import SOURCES, CaseFile, open_source
from lungseg.dataset.store import BuiltDataset

__all__ = [
    "SOURCES",
    "BuildConfig",
    "BuildSummary",
    "BuiltDataset",
    "CaseFile",
    "build_dataset",
    "open_source",
]
