"""Peak memory of a call: the resident set size polled from a thread while it runs.

``peak_memory_mb(f)`` runs ``f()`` and returns ``(f(), peak)`` with ``peak`` the largest
resident set size (MiB) of this process seen every ``interval`` seconds (Linux
``/proc/self/status``; NaN elsewhere).  It includes what was resident before the call,
so it answers "how much memory does a run need", as benchmarks report it.
"""
from __future__ import annotations

import threading
from typing import Callable, TypeVar

__all__ = ["peak_memory_mb", "rss_mb"]

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
