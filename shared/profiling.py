"""Peak memory of a call: the resident set size polled from a thread while it runs.

``peak_memory_mb(f)`` runs ``f()`` and returns ``(f(), peak)`` with ``peak`` the largest
resident set size (MiB) of this process seen every ``interval`` seconds (Linux
``/proc/self/status``; NaN elsewhere).  It includes what was resident before the call,
so it answers "how much memory does a run need", as benchmarks report it.

``release_freed_memory()`` hands the heap that freed arrays left behind back to the
system (glibc's ``malloc_trim``): a pipeline of stages calls it between them, so that the
next stage's peak does not stack on the free pages the last one kept resident.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
from typing import Callable, TypeVar

__all__ = ["peak_memory_mb", "rss_mb", "release_freed_memory"]

R = TypeVar("R")


def rss_mb() -> float:
    """Resident set size of this process in MiB (NaN where ``/proc`` is absent)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_memory_mb(func: Callable[[], R], interval: float = 0.05) -> tuple[R, float]:
    """Run ``func``; return its result and the peak resident set size (MiB) seen while it ran."""
    peak = [rss_mb()]
    done = threading.Event()

    def poll() -> None:
        while not done.wait(interval):
            peak[0] = max(peak[0], rss_mb())

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        out = func()
    finally:
        done.set()
        thread.join()
    return out, max(peak[0], rss_mb())


def _libc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (another C library, or none found)."""
    try:
        name = ctypes.util.find_library("c")
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _libc_malloc_trim()


def release_freed_memory() -> None:
    """Collect garbage and return the freed heap to the system where the C library can.

    Large numpy/torch arrays are allocated by ``mmap`` and return at once when freed, but
    glibc keeps the freed pages of smaller ones (and of arrays below its adaptive mmap
    threshold, which grows as big arrays are freed) in its arenas: measured on a
    million-point geoprior run, 2.7 GB resident after the chart fit of which
    ``malloc_trim(0)`` returns 1 GB.  A no-op where ``malloc_trim`` does not exist.
    """
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
