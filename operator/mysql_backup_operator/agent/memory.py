"""glibc malloc settings for the agent: its memory must stay flat and small (the pod's limit).

Why: glibc's mmap threshold starts at 128 KiB but grows to the size of the largest block freed
(up to 32 MiB), so after the first freed 1 MiB read buffer every further one comes from the heap
and stays resident; and each thread (restore streams, verifiers, part uploads) gets its own arena
that keeps its own freed memory. Measured on a 4-stream restore of the 1.46 GB bench dump: the
pod's peak went from 135 to 121 MiB (agent 90 -> 76 MiB) with the settings below, and the time
did not change beyond the noise. The same as the MALLOC_* environment variables, set from the
inside so every way of starting the agent gets them.

The threshold sits above the restore's own buffers (1 MiB reads of the store, 256 KiB pieces of
decompressed output): first set at 128 KiB, every one of them was a fresh mmap, zeroed page by
page, about 160,000 page faults per pass over 657 MB stored (the verification pass, then the
apply). At 2 MiB they are reused from the two arenas: verifying the bench's six objects took
0.92-0.94 s in the pod against 1.03-1.19 s, the apply 31.2-31.7 s against 31.7-33.1 s, and a
4-stream restore's pod peak was 124 MiB against 121 MiB (docs/performance.md, sixth round).
Anything larger (a very compressible dump's long lines) is still mmapped and returned at once.

Backups read zstd's output into a new object each time (up to 1 MiB), so the old 128 KiB
threshold made each of those reads a fresh mmap too: interleaved runs of the same backup took
14.9 s and 21.6 s with it against 12.8 s and 14.3 s with glibc's defaults, with more system time.
Their own fixed threshold (BACKUP_SETTINGS) sits above those reads and below the 8 MiB parts.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Mapping

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

SETTINGS = {
    M_MMAP_THRESHOLD: 2 * 1024 * 1024,  # fixed: larger buffers are mmapped and returned when freed
    M_TRIM_THRESHOLD: 4 * 1024 * 1024,  # give freed heap tops back, but not after every read
    M_ARENA_MAX: 2,
}


# Backups: every 8 MiB part buffer its own mapping, returned the moment its upload is done, and
# everything smaller (zstd's output, up to 1 MiB a read) reused from two arenas. With glibc's
# defaults the threshold grew past the part size after the first freed part, so part buffers came
# from the arenas of whichever upload threads freed them (each table's upload has two of its own)
# and stayed there: the agent's resident set varied from 86 to 110 MiB between backups of the
# same data, pod peaks up to 137 MiB (sixth round). The threshold is above zstd's reads, for the
# reason above.
BACKUP_SETTINGS = {
    M_MMAP_THRESHOLD: 4 * 1024 * 1024,
    M_TRIM_THRESHOLD: 8 * 1024 * 1024,
    M_ARENA_MAX: 2,
}


def tune_malloc(settings: Mapping[int, int] = SETTINGS) -> bool:
    """Applies `settings`; False (and nothing changed) when the C library is not glibc."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        return all(mallopt(param, value) == 1 for param, value in settings.items())
    return False
