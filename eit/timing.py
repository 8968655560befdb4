"""Timing of the forward model: forward + adjoint gradient of the CEM for all KTC injections.

:func:`fwd_grad_seconds` is the figure both EIT benchmarks report: the median over
``repeats`` runs (after a warm-up that computes the fill-reducing ordering) of one
:meth:`eit.forward.CEM.solve` (assemble ``A(sigma)``, factorise once, 32 solves, Schur
complement, all data) plus one :meth:`eit.forward.CEM.vjp` (the adjoint gradient), on the
KTC tank with 32 electrodes, ``z = 1e-6`` Ohm m^2 and a DG0 conductivity with one smooth
bump, ``sigma = 0.8 + 0.5 exp(-((x - 0.03)^2 + y^2) / 0.03^2)``.

The patterns (:func:`timing_patterns`) are the organisers' ``Injref`` (32 x 76) and ``Mpat``
(32 x 31) when the KTC data folder is present, otherwise zero-sum random currents of the same
shape with adjacent-difference measurements (the same cost).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

__all__ = ["median_time", "timing_patterns", "timing_model", "fwd_grad_seconds"]


def median_time(f: Callable[[], object], repeats: int) -> float:
    """Median wall time (s) of ``repeats`` calls of ``f`` after one warm-up call."""
    f()  # warm-up: ordering, caches
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def timing_patterns() -> tuple[np.ndarray, np.ndarray, str]:
    """``(Inj, Mpat, source)``: the KTC reference patterns, or random ones of their shape."""
    from eit.ktc import reference_patterns
    from eit.patterns import adjacent_differences

    found = reference_patterns()
    if found is not None:
        return (*found, "ktc2023 ref.mat")
    rng = np.random.default_rng(0)
    inj = rng.standard_normal((32, 76))
    inj -= inj.mean(0)
    return inj, adjacent_differences(32), "synthetic (data folder absent)"


def timing_model(size: str = "1500"):
    """``(model, sigma, dv, source)``: the CEM on the KTC mesh preset ``size``, the bump
    conductivity, a random cotangent and where the patterns came from."""
    from eit.forward import CEM
    from eit.mesh import ktc_mesh

    inj, G, source = timing_patterns()
    model = CEM(ktc_mesh(size), inj, G, z=1e-6)
    c = model.cell_centroids
    sigma = 0.8 + 0.5 * np.exp(-((c[:, 0] - 0.03) ** 2 + c[:, 1] ** 2) / 0.03 ** 2)
    dv = np.random.default_rng(1).standard_normal(model.n_data)
    return model, sigma, dv, source


def fwd_grad_seconds(size: str = "1500", repeats: int = 11) -> float:
    """Median seconds of forward + adjoint gradient on the KTC mesh preset ``size``
    (``"1500"`` or ``"10000"``; module docstring)."""
    model, sigma, dv, _ = timing_model(size)
    return median_time(lambda: model.vjp(model.solve(sigma), dv), repeats)
