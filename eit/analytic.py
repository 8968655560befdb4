"""Reference solutions on a homogeneous disk (for checking the finite element models).

* Continuum Neumann problem on a disk of radius ``R`` with conductivity ``sigma``:
  ``sigma du/dn = cos(k theta)`` gives ``u = R (r/R)^k cos(k theta) / (k sigma)``
  (:func:`disk_neumann_cos`); the Dirichlet problem ``u = cos(k theta)`` has the flux
  ``sigma du/dn = sigma k cos(k theta) / R`` (:func:`disk_dirichlet_flux_cos`).
* Complete electrode model on a homogeneous disk: :func:`cem_disk_fourier` solves the CEM
  weak form exactly in the space of harmonic functions truncated to Fourier modes
  ``k <= n_modes`` (a spectral Galerkin method: ``u = a_0 + sum_k (r/R)^k (a_k cos k theta +
  b_k sin k theta)``; the stiffness is ``sigma * pi * k`` per mode, the electrode integrals of
  products of trigonometric functions are closed form).  It converges to the CEM solution
  as ``n_modes`` grows and shares nothing with the finite element code.
"""
from __future__ import annotations

import numpy as np

__all__ = ["disk_neumann_cos", "disk_dirichlet_flux_cos", "cem_disk_fourier"]


def disk_neumann_cos(x, y, k: int, sigma: float = 1.0, radius: float = 1.0):
    """Potential with Neumann data ``cos(k theta)`` (zero boundary mean), at points (x, y)."""
    r = np.hypot(x, y)
    th = np.arctan2(y, x)
    return radius * (r / radius) ** k * np.cos(k * th) / (k * sigma)


def disk_dirichlet_flux_cos(theta, k: int, sigma: float = 1.0, radius: float = 1.0):
    """Current density ``sigma du/dn`` on the boundary for Dirichlet data ``cos(k theta)``."""
    return sigma * k * np.cos(k * np.asarray(theta)) / radius


def _arc_integrals(m: np.ndarray, a: float, b: float):
    """``int_a^b cos(m t) dt`` and ``int_a^b sin(m t) dt`` for integer arrays m (m may be 0)."""
    m = np.asarray(m, dtype=float)
    safe = np.where(m == 0, 1.0, m)
    ic = np.where(m == 0, b - a, (np.sin(m * b) - np.sin(m * a)) / safe)
    is_ = np.where(m == 0, 0.0, (np.cos(m * a) - np.cos(m * b)) / safe)
    return ic, is_


def cem_disk_fourier(radius: float, arcs, z, sigma: float, currents, n_modes: int = 300):
    """Electrode potentials ``U (L, P)`` (``sum_l U_l = 0``) of the CEM on a homogeneous disk.

    ``arcs (L, 2)`` electrode start/end angles (rad), ``z`` contact impedance(s) (Ohm m^2),
    ``sigma`` (S/m), ``currents (L, P)`` (A).
    """
    arcs = np.asarray(arcs, dtype=float)
    L = len(arcs)
    z = np.broadcast_to(np.asarray(z, dtype=float), (L,))
    I = np.asarray(currents, dtype=float).reshape(L, -1)
    K = n_modes
    # basis on the boundary: phi_0 = 1, phi_{2k-1} = cos k t, phi_{2k} = sin k t
    n = 2 * K + 1
    kind = np.zeros(n, int)  # 0 const, 1 cos, 2 sin
    freq = np.zeros(n, int)
    kind[1::2], kind[2::2] = 1, 2
    freq[1::2] = freq[2::2] = np.arange(1, K + 1)
    A = np.zeros((n + L, n + L))
    # int_Omega sigma grad u . grad v for (r/R)^k cos k t : sigma * pi * k (independent of R)
    A[np.arange(1, n), np.arange(1, n)] = sigma * np.pi * freq[1:]
    J, Kk = np.meshgrid(freq, freq, indexing="ij")
    KJ, KK = np.meshgrid(kind, kind, indexing="ij")
    for l, (a, b) in enumerate(arcs):
        c_minus, s_minus = _arc_integrals(J - Kk, a, b)
        c_plus, s_plus = _arc_integrals(J + Kk, a, b)
        # products phi_i phi_j integrated over the arc (angle measure)
        G = np.zeros((n, n))
        cc = (KJ != 2) & (KK != 2)
        ss = (KJ == 2) & (KK == 2)
        cs = (KJ != 2) & (KK == 2)  # cos(j t) sin(k t)
        sc = (KJ == 2) & (KK != 2)  # sin(j t) cos(k t)
        const_j = KJ == 0
        const_k = KK == 0
        # cos j cos k = (cos(j-k) + cos(j+k)) / 2 (const = cos 0 t)
        G[cc] = 0.5 * (c_minus + c_plus)[cc]
        G[ss] = 0.5 * (c_minus - c_plus)[ss]
        # cos j sin k = (sin(k+j) + sin(k-j)) / 2 = (s_plus - s_minus) / 2
        G[cs] = 0.5 * (s_plus - s_minus)[cs]
        # sin j cos k = (sin(j+k) + sin(j-k)) / 2
        G[sc] = 0.5 * (s_plus + s_minus)[sc]
        del const_j, const_k
        G *= radius
        ic, is_ = _arc_integrals(freq, a, b)
        g = np.where(kind == 2, is_, ic) * radius  # int_e phi_i ds
        w = 1.0 / z[l]
        A[:n, :n] += w * G
        A[:n, n + l] -= w * g
        A[n + l, :n] -= w * g
        A[n + l, n + l] += w * radius * (b - a)
    rhs = np.zeros((n + L, I.shape[1]))
    rhs[n:] = I
    # ground: the constant mode (u, U) -> (u + c, U + c) is the null space; fix sum U = 0
    e = np.zeros(n + L)
    e[n:] = 1.0
    e[0] = 0.0
    A_g = A + np.outer(e, e)
    sol = np.linalg.solve(A_g, rhs)
    U = sol[n:]
    return U - U.mean(0)
