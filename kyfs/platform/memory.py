"""Giving freed memory back to the system: glibc's malloc_trim(3).

CPython hands blocks over 512 bytes to the C library's malloc. glibc keeps what a
program frees for its next allocations, and after large buffers (an open file's changed
blocks, 64 KiB each) come and go, its arenas can hold hundreds of MiB that the process
no longer uses: measured, 400 files with 4 MiB of unsaved writes each left 1.19 GB of
RSS after they were closed. ``malloc_trim(0)`` returns the free pages of every arena
(madvise MADV_DONTNEED, glibc >= 2.8).

Thread-safety: malloc_trim locks the arenas itself; safe from any thread.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def trim() -> bool:
    """Return the C library's free memory to the system; False where there is no glibc
    malloc_trim (then nothing happens)."""
    function = _malloc_trim()
    if function is None:
        return False
    function(0)
    return True
