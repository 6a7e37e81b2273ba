"""The server's settings (``lungseg serve`` flags, handed to its workers as
``LUNGSEG_*`` variables) and its access log."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn.config

from lungseg.imaging.readers import DEFAULT_LIMITS, ReadLimits


@dataclass(frozen=True)
class ServeSettings:
    """Limits and model of the server (``lungseg serve`` flags).

    Attributes:
        model: ONNX model path; the shipped model by default.
        max_slice_mb: largest slice upload.
        max_volume_mb: largest volume upload (NIfTI or zip of a DICOM series).
        threads: onnxruntime threads per worker (0: all cores).
        infection: also segment COVID-19 infection (where the infection model ships).
        max_jobs: segmentations running at once per worker (each in its own thread).
        max_queue: segmentations waiting per worker; beyond it the answer is 503.
        max_slices: slices of one volume (``imaging.readers.ReadLimits``).
        max_voxels: voxels of one volume; with the defaults one upload stays within
            about 2.5 GB of server memory (``benchmarks/hostile.py``).
    """

    model: str | None = None
    max_slice_mb: float = 32.0
    max_volume_mb: float = 512.0
    threads: int = 0
    infection: bool = True
    max_jobs: int = 2
    max_queue: int = 16
    max_slices: int = DEFAULT_LIMITS.max_slices
    max_voxels: int = DEFAULT_LIMITS.max_voxels

    ENV: ClassVar[dict[str, str]] = {
        "model": "LUNGSEG_MODEL",
        "max_slice_mb": "LUNGSEG_MAX_SLICE_MB",
        "max_volume_mb": "LUNGSEG_MAX_VOLUME_MB",
        "threads": "LUNGSEG_THREADS",
        "infection": "LUNGSEG_INFECTION",
        "max_jobs": "LUNGSEG_MAX_JOBS",
        "max_queue": "LUNGSEG_MAX_QUEUE",
        "max_slices": "LUNGSEG_MAX_SLICES",
        "max_voxels": "LUNGSEG_MAX_VOXELS",
    }

    @classmethod
    def from_env(cls) -> ServeSettings:
        """Settings from ``LUNGSEG_*`` variables (how ``lungseg serve`` hands them to its workers)."""
        values: dict[str, Any] = {}
        for name, variable in cls.ENV.items():
            if os.environ.get(variable):
                text = os.environ[variable]
                converters: dict[str, Callable[[str], Any]] = {
                    "model": str,
                    "threads": int,
                    "max_jobs": int,
                    "max_queue": int,
                    "max_slices": int,
                    "max_voxels": int,
                    "infection": lambda v: v == "True",
                }
                values[name] = converters.get(name, float)(text)
        return cls(**values)

    @property
    def limits(self) -> ReadLimits:
        return ReadLimits(max_slices=self.max_slices, max_voxels=self.max_voxels)

    def to_env(self) -> dict[str, str]:
        return {
            variable: str(getattr(self, name))
            for name, variable in self.ENV.items()
            if getattr(self, name) is not None
        }


ACCESS_LOGGER = logging.getLogger("lungseg.access")
"""One line per request: method, path (no query), status, milliseconds. Never a file
name or any other part of what a user sent."""

ACCESS_LOG_CONFIG: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
ACCESS_LOG_CONFIG["loggers"]["lungseg.access"] = {
    "handlers": ["default"],
    "level": "INFO",
    "propagate": False,
}
