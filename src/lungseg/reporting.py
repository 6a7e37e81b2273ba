"""What the reports of every stage share: Markdown tables, CSV tables, and saving a
matplotlib figure. The stages compute their tables in plain functions and draw and
write them with these."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    digits: int = 5,
    *,
    first: Sequence[str] = (),
) -> Path:
    """Rows as CSV; the columns are ``first``, then every key in order of first
    appearance (rows of different sources may differ); floats rounded to ``digits``."""
    columns = list(dict.fromkeys([*first, *(key for row in rows for key in row)]))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: round(v, digits) if isinstance(v, float) else v for k, v in row.items()}
            )
    return path


def save_figure(fig: Any, path: Path, dpi: int = 90, *, top: float = 1.0) -> Path:
    """Lay out, save and close a matplotlib figure (``top`` < 1 leaves room for a title)."""
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
