"""Current and measurement patterns of electrode systems (``L`` electrodes, numbered 0..L-1).

A current pattern is an ``(L, P)`` matrix ``I`` whose column ``p`` holds the current (A)
driven through each electrode for injection ``p`` (every column sums to zero); a
measurement pattern is an ``(L, M)`` matrix ``G`` with measurement ``m`` of an injection
``sum_l G[l, m] U_l`` (see :class:`eit.forward.CEM`).

* :func:`adjacent_currents`: injection ``p`` drives ``+a`` into electrode ``p mod L`` and
  ``-a`` out of electrode ``p + 1 mod L``;
* :func:`adjacent_differences`: the ``L - 1`` adjacent differences ``U_m - U_{m+1}`` (the
  KTC organisers' ``Mpat``);
* :func:`synthetic_patterns`: KTC-like ``(Inj, Mpat)`` for simulations without the
  challenge files.
"""
from __future__ import annotations

import numpy as np

__all__ = ["adjacent_currents", "adjacent_differences", "synthetic_patterns"]


def adjacent_currents(n_electrodes: int, n_patterns: int | None = None, amplitude: float = 1.0) -> np.ndarray:
    """``(L, P)`` currents: pattern ``p`` from electrode ``p mod L`` to ``p + 1 mod L``
    (``P = L`` by default), ``amplitude`` amperes."""
    L = int(n_electrodes)
    P = L if n_patterns is None else int(n_patterns)
    I = np.zeros((L, P))
    for p in range(P):
        I[p % L, p], I[(p + 1) % L, p] = amplitude, -amplitude
    return I


def adjacent_differences(n_electrodes: int) -> np.ndarray:
    """``(L, L - 1)`` measurement pattern of the adjacent differences ``U_m - U_{m+1}``."""
    L = int(n_electrodes)
    G = np.zeros((L, L - 1))
    for m in range(L - 1):
        G[m, m], G[m + 1, m] = 1.0, -1.0
    return G


def synthetic_patterns(n_electrodes: int = 32, amplitude: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """KTC-like ``(Inj, Mpat)`` for simulations without the challenge files.

    Only even 0-based (odd 1-based) electrodes inject: each adjacent pair ``(2a, 2a+2)``
    (cyclically) and each pair ``(0, 2a)``, ``a >= 2``; ``Mpat`` holds the ``L - 1``
    adjacent differences ``U_m - U_{m+1}``.
    """
    L = int(n_electrodes)
    if L < 4 or L % 2:
        raise ValueError(f"synthetic patterns need an even number of electrodes >= 4, got {L}")
    even = np.arange(0, L, 2)
    pairs = [(even[a], even[(a + 1) % len(even)]) for a in range(len(even))]
    pairs += [(0, even[a]) for a in range(2, len(even) - 1)]
    inj = np.zeros((L, len(pairs)))
    for n, (a, b) in enumerate(pairs):
        inj[a, n], inj[b, n] = amplitude, -amplitude
    return inj, adjacent_differences(L)
