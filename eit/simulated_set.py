"""A KTC-like simulated validation set: the data on which EIT settings are chosen.

The four KTC training targets are the only real data in the project, so settings chosen on
them are reported on the set they were fitted to.  This module makes a fixed, seeded set of
simulated targets that look like the challenge (:func:`eit.phantoms.ktc_like_phantom`: 1-3
disks, polygons, stars, bars, L- and C-shapes, plastic or metal in water) and are measured
like it, with the model errors a real tank has and the inversion does not know about:

* **finer mesh**: the data come from a mesh with elements about 2.5x smaller in the interior
  and 2x smaller on the electrodes than the 1.5k-vertex inversion mesh (no inverse crime);
* **perturbed electrodes**: each of ``n_tanks`` simulation tanks moves every electrode's centre
  by ``N(0, 0.005 rad)`` (about 0.6 mm) and scales its width by ``U(0.9, 1.1)``;
* **contact impedances**: per case and electrode, log-uniform in ``[5e-7, 5e-6]`` Ohm m^2
  (the inversion assumes 1e-6 everywhere), the same for the target and its reference;
* **water**: background conductivity uniform in ``[0.7, 0.85]`` S/m (the tank's fits give 0.77);
* **noise**: Gaussian with the organisers' noise model *as their code applies it*
  (:data:`NOISE`: 0.05 % of each value plus 0.01 % of the largest, the 5 % + 1 % of their
  call read as percent, see :mod:`eit.baselines`), drawn independently for the target and for
  its water-only reference.

A case becomes an :class:`eit.problem.EITProblem` exactly as a KTC target does
(:func:`eit.problem.measured_problem`: background fitted to the simulated reference,
difference data, the stated 5 % + 1 % misfit weights), so a setting chosen here transfers to
the tank data unchanged.  The truth is the phantom's three-class image on the KTC pixel grid.

Example::

    cases = simulated_set(levels=range(1, 8), n_per_level=40)     # 280 cases, no simulation yet
    sim = SetSimulator(inj, mpat)                                 # the tanks (meshes, CEMs)
    problem = sim.problem(cases[0], model)                        # simulate + EITProblem
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from eit.grid import pixel_centres, tank_mask
from eit.ktc import level_mask, noise_std
from eit.phantoms import Phantom, ktc_like_phantom

__all__ = ["SimCase", "SetSimulator", "simulated_set", "simulation_patterns", "NOISE", "SET_SEED"]

#: the organisers' noise model as their code applies it: (relative, of the largest value)
NOISE = (5e-4, 1e-4)
#: the seed of the fixed validation set (cases differ by level and index)
SET_SEED = 2023
#: simulation mesh ``(h, h_electrode)`` as fractions of the tank radius (finer than "1500")
FINE_H = (0.03, 0.012)


@dataclass(frozen=True)
class SimCase:
    """One simulated target: a phantom at a difficulty level, measured in tank ``tank``
    with contact impedances ``z`` (Ohm m^2, one per electrode); ``seed`` draws its noise."""

    phantom: Phantom
    level: int
    index: int
    tank: int
    z: tuple
    seed: int

    @property
    def name(self) -> str:
        return f"sim-L{self.level}-{self.index:03d}"


def simulation_patterns() -> tuple[np.ndarray, np.ndarray, str]:
    """``(Inj, Mpat, source)``: the KTC reference patterns (``Injref``, ``Mpat`` of the training
    folder's ``ref.mat``) when the challenge data are there, else
    :func:`eit.patterns.synthetic_patterns`; ``source`` is ``"ktc"`` or ``"synthetic"``."""
    from eit.ktc import reference_patterns
    from eit.patterns import synthetic_patterns

    found = reference_patterns()
    if found is not None:
        return (*found, "ktc")
    return (*synthetic_patterns(32), "synthetic")


def _case_rng(seed: int, level: int, index: int) -> np.random.Generator:
    # One independent stream per (level, index): adding cases or levels changes no other case.
    return np.random.default_rng([int(seed), int(level), int(index)])


def simulated_set(levels: Iterable[int] = range(1, 8), n_per_level: int = 40, *, seed: int = SET_SEED,
                  n_tanks: int = 4, n_electrodes: int = 32, radius: float = 0.115) -> list[SimCase]:
    """The fixed validation set: ``n_per_level`` distinct cases at each level (no simulation)."""
    if int(n_per_level) != n_per_level or n_per_level < 1:
        raise ValueError(f"n_per_level must be an integer >= 1, got {n_per_level}")
    cases = []
    for level in levels:
        if int(level) != level or not 1 <= level <= 7:
            raise ValueError(f"difficulty levels are integers 1..7, got {level}")
        for i in range(int(n_per_level)):
            rng = _case_rng(seed, level, i)
            background = float(rng.uniform(0.7, 0.85))
            phantom = ktc_like_phantom(rng, radius, background)
            z = tuple(np.exp(rng.uniform(np.log(5e-7), np.log(5e-6), n_electrodes)).tolist())
            cases.append(SimCase(phantom, int(level), i, int(rng.integers(n_tanks)), z,
                                 int(rng.integers(2**31))))
    return cases


def perturbed_arcs(rng: np.random.Generator, arcs: np.ndarray, shift: float = 0.005,
                   width: tuple[float, float] = (0.9, 1.1)) -> np.ndarray:
    """Electrode arcs ``(L, 2)`` (rad) with centres moved by ``N(0, shift)`` and widths scaled."""
    centre = arcs.mean(axis=1) + shift * rng.standard_normal(len(arcs))
    half = 0.5 * (arcs[:, 1] - arcs[:, 0]) * rng.uniform(*width, len(arcs))
    return np.stack([centre - half, centre + half], axis=1)


class SetSimulator:
    """The simulation tanks of a set and the measurement of its cases.

    Parameters
    ----------
    inj, mpat: ``(L, N)`` currents and ``(L, M)`` measurement pattern (the KTC ``Injref``,
        ``Mpat`` or :func:`eit.patterns.synthetic_patterns`).
    n_tanks: tanks with independently perturbed electrodes (built on first use).
    fine_h: simulation mesh sizes (fractions of the radius), see :data:`FINE_H`.
    seed: draws the electrode perturbations.
    """

    def __init__(self, inj: np.ndarray, mpat: np.ndarray, n_tanks: int = 4, fine_h: tuple = FINE_H,
                 seed: int = SET_SEED) -> None:
        self.inj, self.mpat = np.asarray(inj, float), np.asarray(mpat, float)
        self.n_tanks, self.fine_h, self.seed = int(n_tanks), tuple(fine_h), int(seed)
        self._tanks: dict[int, object] = {}

    def tank(self, k: int):
        """The fine-mesh CEM of tank ``k`` (its electrodes perturbed by its own seed)."""
        if k not in self._tanks:
            from eit.forward import CEM
            from eit.mesh import KTC_RADIUS, disk_mesh_from_arcs, ktc_default_arcs

            arcs = perturbed_arcs(np.random.default_rng([self.seed, 99, k]), ktc_default_arcs())
            h, h_el = (f * KTC_RADIUS for f in self.fine_h)
            mesh = disk_mesh_from_arcs(KTC_RADIUS, arcs, h=h, h_electrode=h_el, kind="ktc")
            self._tanks[k] = CEM(mesh, currents=self.inj, patterns=self.mpat, z=1e-6)
        return self._tanks[k]

    def measure(self, case: SimCase) -> tuple[np.ndarray, np.ndarray]:
        """``(uel, uelref)``: noisy voltages of the case and of its water-only reference."""
        fine = self.tank(case.tank % self.n_tanks)
        fine.set_contact_impedance(np.asarray(case.z))
        u = fine.forward(case.phantom(fine.cell_centroids))
        u_ref = fine.forward(np.full(fine.n_sigma, float(case.phantom.background)))
        rng = np.random.default_rng(case.seed)
        s = noise_std(u_ref, *NOISE)
        return u + s * rng.standard_normal(u.shape), u_ref + s * rng.standard_normal(u.shape)

    def problem(self, case: SimCase, model, data: str = "difference"):
        """The case as an :class:`eit.problem.EITProblem` on the inversion ``model`` (a CEM
        with the same patterns), built as a KTC target is."""
        from eit.problem import measured_problem

        if model.n_data != self.inj.shape[1] * self.mpat.shape[1]:
            raise ValueError("the inversion model must measure the simulator's patterns")
        uel, uelref = self.measure(case)
        radius = float(np.max(np.linalg.norm(model.vertex_coordinates, axis=1)))
        X, Y = pixel_centres(radius=radius)
        labels = case.phantom.classes(np.c_[X.ravel(), Y.ravel()]).reshape(X.shape)
        truth = np.where(tank_mask(radius=radius), labels, 0).astype(np.uint8)
        mask = level_mask(self.inj, self.mpat, case.level)
        return measured_problem(model, uel, uelref, mask, truth=truth, name=case.name, level=case.level,
                                data=data, sigma_true=case.phantom(model.cell_centroids),
                                info={"tank": case.tank, "simulated": True})
