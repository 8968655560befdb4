"""A thread-pool ``map`` for work that releases the GIL.

Independent solves such as ``scipy.optimize.linear_sum_assignment`` (one per patch) run in
C without the interpreter lock, so threads give a real speed-up without the pickling
cost of processes::

    results = map_parallel(solve, jobs)      # == [solve(j) for j in jobs]
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

__all__ = ["map_parallel", "available_cores"]

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def map_parallel(func: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> list[R]:
    """``[func(x) for x in items]`` on a thread pool of ``workers`` threads (default: the
    available cores, at most 8); the order and the results are those of the serial loop."""
    items = list(items)
    workers = workers or min(available_cores(), 8)
    if workers <= 1 or len(items) < 2:
        return [func(x) for x in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(func, items))
