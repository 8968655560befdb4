"""Synthetic shapes with a known clean surface, for demos, tests and benchmarks.

* :func:`torus` -- the torus ``(sqrt(x^2 + y^2) - R)^2 + z^2 = r^2`` (``R`` = ``major``,
  ``r`` = ``minor``) as a triangle mesh (``trimesh.creation.torus``);
* :func:`noisy_torus` -- ``n`` points sampled uniformly by area on it plus Gaussian noise
  ``N(0, (noise d)^2 I)`` with ``d`` the mesh's bounding-box diagonal (the demo's input);
* :func:`sphere` -- ``n`` points uniform on the unit sphere (normalised Gaussian vectors),
  optionally plus ``N(0, noise^2 I)``;
* :func:`sphere_cap` -- ``n`` points uniform by area on the cap ``z >= cos(half_angle)`` of
  the unit sphere.
"""
from __future__ import annotations

import numpy as np

__all__ = ["torus", "noisy_torus", "sample_surface", "sphere", "sphere_cap"]


def torus(major: float = 1.0, minor: float = 0.4, sections: tuple[int, int] = (96, 48)):
    """The torus of radii ``major`` and ``minor`` as a ``trimesh.Trimesh`` with ``sections``
    (around the axis, around the tube) segments."""
    import trimesh

    return trimesh.creation.torus(major_radius=major, minor_radius=minor, major_sections=sections[0],
                                  minor_sections=sections[1])


def sample_surface(mesh, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points uniform by area on ``mesh`` (``trimesh.sample.sample_surface``)."""
    import trimesh

    points, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return np.asarray(points)


def noisy_torus(n: int = 2500, noise: float = 0.01, seed: int = 0, sections: tuple[int, int] = (96, 48)):
    """Clean torus mesh, ``n`` noisy samples on it and its diagonal ``d``: ``(mesh, points, d)``.

    The noise std is ``noise * d`` per coordinate; sampling and noise both use ``seed``.
    """
    mesh = torus(sections=sections)
    clean = sample_surface(mesh, n, seed=seed)
    diag = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))
    noisy = clean + np.random.default_rng(seed).normal(scale=noise * diag, size=clean.shape)
    return mesh, noisy, diag


def sphere(n: int, seed: int = 0, noise: float = 0.0) -> np.ndarray:
    """``n`` points ``g / |g|`` (``g ~ N(0, I_3)``) on the unit sphere, plus ``noise``-std Gaussian
    noise when ``noise > 0`` (drawn from the same generator after the points)."""
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return p + noise * rng.normal(size=p.shape) if noise > 0 else p


def sphere_cap(n: int, rng: np.random.Generator, half_angle_deg: float = 25.0) -> np.ndarray:
    """``n`` points uniform (in area) on the unit-sphere cap of half-angle ``half_angle_deg``
    around +z: ``cos(theta) ~ U(cos(half_angle), 1)``, ``phi ~ U(0, 2 pi)``."""
    ct = rng.uniform(np.cos(np.deg2rad(half_angle_deg)), 1.0, n)
    ph = rng.uniform(0, 2 * np.pi, n)
    st = np.sqrt(1 - ct ** 2)
    return np.stack([st * np.cos(ph), st * np.sin(ph), ct], 1)
