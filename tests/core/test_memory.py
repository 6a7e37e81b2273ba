"""Freed slice-sized blocks are kept for the next slice (``core.memory``): counted in
page faults, in a fresh process each, so the setting is the only difference."""

from __future__ import annotations

import subprocess
import sys

import pytest

REPEATED_ALLOCATION = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from lungseg.core.memory import keep_freed_memory
    assert keep_freed_memory()
plane = np.ones((512, 512), np.int32)


def rescale():  # a slice's temporaries, as a DICOM rescale makes them: 2 MB blocks
    return np.clip(plane.astype(np.int64) - 1024, -32768, 32767).astype(np.int16)


for _ in range(3):  # glibc's moving threshold settles
    rescale()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    rescale()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", REPEATED_ALLOCATION, mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux")
def test_slice_sized_temporaries_are_reused_not_faulted_in_again() -> None:
    default, kept = _page_faults("default"), _page_faults("keep")
    assert default > 50 * 256  # fresh pages every round: hundreds of page faults each
    assert kept < 256  # the same blocks reused: a few pages in 50 rounds
