"""lungseg: lung segmentation on chest CT.

Stages: ``lungseg.dataset`` (build a training set), ``lungseg.training`` (train a
U-Net), ``lungseg.evaluation`` (analyse it), ``lungseg.inference`` (predict with the
exported model, without torch) and ``lungseg.serve`` (web API and viewer). All of
them read CT through ``lungseg.imaging`` and stand on ``lungseg.core`` (labels, task
definitions, mask morphology, metrics). The layers are checked by ``make lint``
(import-linter; ``[tool.importlinter]`` in pyproject.toml).
"""

from __future__ import annotations

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)
