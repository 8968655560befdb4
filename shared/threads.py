"""A thread-pool ``map`` for work that releases the GIL.

Independent solves such as ``scipy.optimize.linear_sum_assignment`` (one per patch) run in
C without the interpreter lock, so threads give a real speed-up without the pickling
cost of processes::

    results = map_parallel(solve, jobs)      # == [solve(j) for j in jobs]

:func:`thread_limits` caps the threads of torch and of the BLAS libraries (OpenBLAS of
NumPy/SciPy, through ``threadpoolctl``) for a block of work.  A fit whose step is dominated by
small dense BLAS calls beside a sparse factorisation runs faster with one BLAS thread: on
matrices of a few thousand rows OpenBLAS's thread start-up and spinning cost more than they
save and take the core that torch needs (measured: a neural EIT fit on 2 cores, 19.5 s with
2 BLAS threads, 4.2 s with one)::

    with thread_limits(blas=1):
        result = fit(...)
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

import torch

__all__ = ["map_parallel", "available_cores", "thread_limits"]

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


def _check(n: int | None, what: str) -> None:
    if n is not None and (int(n) != n or n < 1):
        raise ValueError(f"the number of {what} threads must be an integer >= 1 or None, got {n}")


@contextmanager
def thread_limits(torch_threads: int | None = None, blas: int | None = None) -> Iterator[None]:
    """Run the block with at most ``torch_threads`` torch intra-op threads and ``blas`` BLAS
    threads (``None``: leave that pool as it is); the previous counts are restored on exit,
    also after an exception."""
    _check(torch_threads, "torch")
    _check(blas, "BLAS")
    before = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(int(torch_threads))
    try:
        if blas is None:
            yield
        else:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=int(blas), user_api="blas"):
                yield
    finally:
        torch.set_num_threads(before)
