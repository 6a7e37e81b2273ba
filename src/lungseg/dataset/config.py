"""What decides a dataset build, and what it did: ``build_dataset`` takes the one and
returns the other, and the report (``dataset.report``) shows both."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lungseg.dataset.qc import QCConfig
from lungseg.dataset.split import check_fractions
from lungseg.errors import DatasetError


@dataclass
class BuildConfig:
    """Everything that decides what a build produces; saved as build_config.json.

    Attributes:
        sources: source folders.
        fractions: train, val, test shares of each source's patients.
        seed: split and sampling seed.
        keep_lung_free: share of lung-free slices to keep (0 drops them all).
        slice_step: keep every n-th slice of a volume (1 keeps all).
        keep_flagged: use slices that failed a quality check (they are stored
            and listed either way).
        qc: quality-check thresholds.
    """

    sources: list[str] = field(default_factory=list)
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    keep_lung_free: float = 0.0
    slice_step: int = 1
    keep_flagged: bool = False
    qc: QCConfig = field(default_factory=QCConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.keep_lung_free <= 1.0:
            raise DatasetError(f"keep_lung_free must lie in [0, 1], got {self.keep_lung_free}")
        if self.slice_step < 1:
            raise DatasetError(f"slice_step must be at least 1, got {self.slice_step}")
        check_fractions(self.fractions)


@dataclass
class BuildSummary:
    """What a build did, for the CLI and the report."""

    out: Path
    slices_stored: int = 0
    slices_used: int = 0
    lung_free_dropped: int = 0
    lung_free_kept: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    unmatched: list[str] = field(default_factory=list)  # images without a mask
