"""Keep freed memory for the next slice instead of handing it back to the system.

Every slice makes numpy temporaries of a few megabytes (a 512 x 512 plane in float32,
int64 indices). glibc's allocator serves blocks of that size with fresh ``mmap``
pages and returns them to the system when freed (its threshold follows the largest
block freed so far, and a block of that very size is mapped again), so the next
slice pays a page fault for every 4 KB it touches. On a virtual machine a page fault
costs microseconds, more than the arithmetic it serves (``tests/core/test_memory.py``
counts the faults). ``keep_freed_memory`` raises glibc's thresholds so that
blocks up to ``MMAP_THRESHOLD`` come from the heap and up to ``TRIM_THRESHOLD`` of
free heap is kept. A scan's large arrays are above the threshold and go back to the
system as before. ``lungseg predict``, ``lungseg serve`` and their worker processes
call it; a program that imports lungseg decides for itself.
"""

from __future__ import annotations

import ctypes
import sys

MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks below this come from the heap (glibc's own ceiling for its moving threshold)."""
TRIM_THRESHOLD = 64 * 1024 * 1024
"""Free heap kept at most, per arena, before it is returned to the system."""
_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process; ``False`` where the C library is not glibc
    (macOS, Windows, musl), which is then left as it is."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
