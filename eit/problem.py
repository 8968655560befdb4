"""An EIT reconstruction problem: forward model, data to fit, noise model, truth.

Every reconstruction method of :mod:`eit.reconstruct` and :mod:`eit.baselines` takes an
:class:`EITProblem`.  It fixes

* ``model``: the complete electrode model (:class:`eit.forward.CEM`, DG0 conductivity) on
  the inversion mesh;
* ``y``: the voltages that ``model.forward(sigma)`` must match, ``(n_data,)``; entries that
  are missing or removed by the difficulty level are NaN (``mask`` False);
* ``noise``: per-measurement noise standard deviations (the weights of the misfit);
* ``sigma_bg``: the background (water) conductivity;
* ``dy``: the difference data ``Uel - Uelref`` (for linearised difference methods);
* the truth, when known: a KTC segmentation (``truth``) and/or cell conductivities.

KTC data (:func:`ktc_problem`): the water-only reference ``Uelref`` fixes the background by
least squares over homogeneous conductivities.  With ``data="difference"`` (default) the
target is ``y = Uel - Uelref + F(sigma_bg)``: the measured change added to the simulated
background, which cancels most of the model error common to both measurements (electrode
geometry, contact impedances); ``data="absolute"`` fits ``Uel`` itself.

Simulated data (:func:`phantom_problem`): the phantom is simulated on a finer mesh than the
inversion mesh (no inverse crime), with the organisers' noise model; :func:`simulated_problem`
does so for a named phantom in the KTC tank with KTC-like patterns (no data files needed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eit.grid import MeshToGrid
from eit.ktc import KTCTarget, load_target, noise_std

__all__ = ["EITProblem", "ktc_problem", "measured_problem", "phantom_problem", "simulated_problem",
           "fit_background", "background_misfit", "mesh_arrays", "PHANTOMS", "MESH_SIZES"]

#: the named phantoms of :func:`simulated_problem`
PHANTOMS = ("two-inclusion", "random")
#: the inversion meshes (KTC presets, vertices)
MESH_SIZES = ("1500", "10000")


@dataclass
class EITProblem:
    model: object
    y: np.ndarray
    mask: np.ndarray
    noise: np.ndarray
    sigma_bg: float
    dy: np.ndarray | None = None
    truth: np.ndarray | None = None
    sigma_true: np.ndarray | None = None
    name: str = "eit"
    level: int = 1
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.model.n_data
        for k in ("y", "mask", "noise"):
            if np.shape(getattr(self, k)) != (n,):
                raise ValueError(f"{k} must have shape ({n},) (the model's data), got {np.shape(getattr(self, k))}")
        if not self.sigma_bg > 0:
            raise ValueError(f"background conductivity must be positive, got {self.sigma_bg}")
        self.y = np.where(self.mask, self.y, np.nan)
        self._grid = None
        self._adjacency = None

    @property
    def points(self) -> np.ndarray:
        """Vertex coordinates ``(V, 2)`` of the inversion mesh (m)."""
        return self.model.vertex_coordinates

    @property
    def cells(self) -> np.ndarray:
        """Triangles ``(C, 3)`` (vertex indices) of the inversion mesh."""
        return self.model.fe.cells

    @property
    def centroids(self) -> np.ndarray:
        return self.model.cell_centroids

    @property
    def n_cells(self) -> int:
        return self.model.n_sigma

    @property
    def radius(self) -> float:
        return float(np.max(np.linalg.norm(self.points, axis=1)))

    @property
    def grid(self) -> MeshToGrid:
        """Interpolation to the 256x256 KTC pixel grid (built once)."""
        if self._grid is None:
            self._grid = MeshToGrid(self.points, self.cells, radius=self.radius)
        return self._grid

    @property
    def adjacency(self) -> tuple[np.ndarray, np.ndarray]:
        """Cells sharing an edge and the edge lengths (for TV)."""
        if self._adjacency is None:
            from eit.tv import cell_adjacency

            self._adjacency = cell_adjacency(self.points, self.cells)
        return self._adjacency

    def chi2(self, sigma: np.ndarray) -> float:
        """Mean squared noise-weighted misfit of ``sigma`` over the used measurements."""
        r = (self.model.forward(sigma) - self.y) / self.noise
        return float(np.mean(r[self.mask] ** 2))


def mesh_arrays(model) -> tuple[np.ndarray, np.ndarray]:
    """``(points (V, 2), cells (C, 3))`` of a forward model's mesh."""
    return model.vertex_coordinates, model.fe.cells


def fit_background(model, u: np.ndarray, mask: np.ndarray | None = None, iterations: int = 3) -> float:
    """Homogeneous conductivity ``s`` minimising ``||F(s 1) - u||`` over the masked entries.

    The electrode voltages scale nearly as ``1/s`` (exactly so without contact impedance),
    so each step solves the 1-D least-squares problem of that model around the last ``s``.
    """
    u = np.asarray(u, dtype=np.float64)
    m = np.isfinite(u) if mask is None else (np.asarray(mask, bool) & np.isfinite(u))
    s = 1.0
    for _ in range(iterations):
        f = model.forward(np.full(model.n_sigma, s))[m] * s  # F(s) * s ~ F(1)
        denom = float(f @ u[m])
        if not denom > 0:
            raise ValueError("the reference data do not look like voltages of this forward model "
                             "(no positive homogeneous conductivity fits them)")
        s = float(f @ f) / denom
    return s


def background_misfit(u_bg: np.ndarray, u_ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """``||u_bg - u_ref|| / ||u_ref||`` over the observed entries: how far the best homogeneous
    model is from the water-only measurement (the forward model's error at the background, plus
    noise).  :mod:`eit.uncertainty` takes it as the relative uncertainty of the background level."""
    u_bg, u_ref = np.asarray(u_bg, dtype=np.float64), np.asarray(u_ref, dtype=np.float64)
    m = np.isfinite(u_ref) & np.isfinite(u_bg)
    if mask is not None:
        m &= np.asarray(mask, bool)
    return float(np.linalg.norm(u_bg[m] - u_ref[m]) / np.linalg.norm(u_ref[m]))


def ktc_problem(folder: str | Path, target: str | int, level: int = 1, mesh_size: str = "1500", *,
                data: str = "difference", z: float = 1e-6, relative: float = 0.05, of_max: float = 0.01,
                model=None) -> EITProblem:
    """A KTC target as an :class:`EITProblem` (see the module docstring).

    The noise model (the organisers'): ``s_i = sqrt((relative |Uelref_i|)^2 + (of_max max|Uelref|)^2)``.
    ``model`` may be given to reuse a forward model (same ``Inj``/``Mpat``) across targets.
    """
    if data not in ("difference", "absolute"):
        raise ValueError(f"data must be 'difference' or 'absolute', got {data!r}")
    t: KTCTarget = load_target(folder, target, level)
    if model is None:
        from eit.forward import CEM
        from eit.mesh import ktc_mesh

        model = CEM(ktc_mesh(mesh_size), currents=t.data.inj, patterns=t.data.mpat, z=z)
    elif model.n_data != t.data.uel.size:
        raise ValueError(f"the given model produces {model.n_data} data, the target has {t.data.uel.size}")
    return measured_problem(model, t.data.uel, t.reference.uel, t.mask.copy(), ref_observed=t.reference.observed,
                            truth=t.truth, name=t.name, level=t.level, data=data, relative=relative,
                            of_max=of_max, info={"folder": str(folder)})


def measured_problem(model, uel: np.ndarray, uelref: np.ndarray, mask: np.ndarray, *,
                     ref_observed: np.ndarray | None = None, truth: np.ndarray | None = None,
                     name: str = "eit", level: int = 1, data: str = "difference", relative: float = 0.05,
                     of_max: float = 0.01, sigma_true: np.ndarray | None = None,
                     info: dict | None = None) -> EITProblem:
    """An :class:`EITProblem` from a measurement ``uel`` and a water-only reference ``uelref``
    (both ``(n_data,)`` V, NaN where missing), as for KTC tank data (module docstring).

    The background is the homogeneous conductivity fitted to ``uelref``; ``data`` chooses
    the difference target ``uel - uelref + F(sigma_bg)`` or ``uel`` itself; the misfit
    weights are the organisers' noise model of ``uelref`` at ``relative`` / ``of_max``.
    """
    if data not in ("difference", "absolute"):
        raise ValueError(f"data must be 'difference' or 'absolute', got {data!r}")
    ref_observed = np.isfinite(uelref) if ref_observed is None else ref_observed
    sigma_bg = fit_background(model, uelref, ref_observed)
    u_bg = model.forward(np.full(model.n_sigma, sigma_bg))
    dy = uel - uelref
    y = dy + u_bg if data == "difference" else uel
    noise = noise_std(uelref, relative, of_max, mask=ref_observed)
    bg_misfit = background_misfit(u_bg, uelref, ref_observed)
    return EITProblem(model=model, y=y, mask=mask, noise=noise, sigma_bg=sigma_bg, dy=dy, truth=truth,
                      sigma_true=sigma_true, name=name, level=level,
                      info={"data": data, "u_bg": u_bg, "bg_misfit": bg_misfit, **(info or {})})


def phantom_problem(phantom, model, fine_model, *, relative: float = 0.01, of_max: float = 0.001,
                    seed: int = 0, level: int = 1) -> EITProblem:
    """Simulated data of ``phantom`` on ``fine_model``'s mesh, inverted on ``model``'s.

    Both models must share currents and patterns.  Noise: Gaussian with the organisers'
    model at the given levels (also the misfit weights); a reference measurement of the
    background alone is simulated too (for difference methods).  The truth is the phantom
    sampled on the inversion cells and its segmentation on the KTC pixel grid.
    """
    from eit.grid import pixel_centres, tank_mask
    from eit.ktc import level_mask

    if model.n_data != fine_model.n_data:
        raise ValueError("the inversion and simulation models must measure the same data")
    rng = np.random.default_rng(seed)
    u = fine_model.forward(phantom(fine_model.cell_centroids))
    u_ref = fine_model.forward(np.full(fine_model.n_sigma, float(phantom.background)))
    s = noise_std(u_ref, relative, of_max)
    y = u + s * rng.standard_normal(u.shape)
    y_ref = u_ref + s * rng.standard_normal(u.shape)
    mask = level_mask(model.currents, model.patterns, level) if level > 1 else np.ones(model.n_data, bool)
    sigma_bg = fit_background(model, y_ref)
    bg_misfit = background_misfit(model.forward(np.full(model.n_sigma, sigma_bg)), y_ref)
    X, Y = pixel_centres(radius=float(np.max(np.linalg.norm(model.vertex_coordinates, axis=1))))
    inside = tank_mask(radius=float(np.max(np.linalg.norm(model.vertex_coordinates, axis=1))))
    truth = np.where(inside, phantom.classes(np.c_[X.ravel(), Y.ravel()]).reshape(X.shape), 0).astype(np.uint8)
    return EITProblem(model=model, y=y, mask=mask, noise=s, sigma_bg=sigma_bg, dy=y - y_ref, truth=truth,
                      sigma_true=phantom(model.cell_centroids), name="phantom", level=level,
                      info={"data": "absolute", "u_clean": u, "fine_cells": fine_model.n_sigma,
                            "bg_misfit": bg_misfit})


def simulated_problem(phantom: str = "two-inclusion", mesh_size: str = "1500", noise: float = 0.01,
                      seed: int = 0, level: int = 1) -> EITProblem:
    """A named phantom in the KTC tank, simulated on a finer mesh than the inversion mesh.

    ``phantom``: ``"two-inclusion"`` (:func:`eit.phantoms.two_inclusion`) or ``"random"``
    (:func:`eit.phantoms.random_phantom` drawn with ``seed``); 32 electrodes with
    :func:`eit.patterns.synthetic_patterns`, contact impedance 1e-6 Ohm m^2; noise:
    :func:`phantom_problem` with ``relative = noise`` and ``of_max = noise / 10``.
    """
    from eit.forward import CEM
    from eit.mesh import KTC_RADIUS, ktc_mesh
    from eit.patterns import synthetic_patterns
    from eit.phantoms import random_phantom, two_inclusion

    if phantom not in PHANTOMS:
        raise ValueError(f"unknown phantom {phantom!r}; choose from {', '.join(PHANTOMS)}")
    if str(mesh_size) not in MESH_SIZES:
        raise ValueError(f"unknown inversion mesh {mesh_size!r}; choose from {', '.join(MESH_SIZES)}")
    inj, mpat = synthetic_patterns(32)
    coarse = ktc_mesh(mesh_size)
    # The simulation mesh is finer (smaller elements everywhere): no inverse crime.
    fine_h = (0.045, 0.012) if mesh_size == "1500" else (0.02, 0.006)
    fine = ktc_mesh((fine_h[0] * KTC_RADIUS, fine_h[1] * KTC_RADIUS))
    if phantom == "two-inclusion":
        ph = two_inclusion(KTC_RADIUS)
    else:
        ph = random_phantom(np.random.default_rng(seed), KTC_RADIUS)
    model = CEM(coarse, currents=inj, patterns=mpat, z=1e-6)
    fine_model = CEM(fine, currents=inj, patterns=mpat, z=1e-6)
    return phantom_problem(ph, model, fine_model, relative=noise, of_max=noise / 10, seed=seed, level=level)
