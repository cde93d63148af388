"""The C allocator of a training process: keep freed memory for the next step instead of faulting it in again.

glibc's malloc serves a block above its mmap threshold (128 KiB at start, raised as such blocks are
freed) with a fresh ``mmap`` and unmaps it on free, and returns free memory at the top of its heap to
the kernel above its trim threshold. A training step on the CPU allocates and frees the same
activation tensors, megabytes each, every step, so by default many of them are page-faulted in (and
zeroed by the kernel) again at every step: on the project's 2-core VM, 17,000-50,000 minor faults per
resnet micro step at batch 128, 50-120 ms of system time against ~330 ms of compute on one thread,
and how many depends on the heap's layout, so it varies from run to run and between two loops in
one process. Fixed thresholds keep blocks of up to 32 MiB in the heap, reused at the next step
(0-200 faults per step, ~1 ms). The cost: the process keeps its peak heap (up to ``TRIM_THRESHOLD``
of it free) rather than giving it back between steps, which a training process needs again anyway.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit; bigger blocks are still mapped
TRIM_THRESHOLD = 2**30
# Settings a user made (environment, tunables): theirs win.
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process, once; False where that does not apply
    (not Linux with glibc, or the user set malloc's parameters), True where they are set."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or any(k in os.environ for k in _USER_SETTINGS) \
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it: musl's mallopt ignores these
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
