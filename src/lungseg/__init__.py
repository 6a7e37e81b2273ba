"""lungseg: lung segmentation on chest CT.

Stages: ``lungseg.dataset`` (build a training set), ``lungseg.training`` (train
and analyse a U-Net), ``lungseg.serve`` (web API and viewer). All of them read
CT through ``lungseg.imaging``.
"""

from __future__ import annotations

__version__ = "0.1.0"
