"""Synthetic conductivity phantoms and measurement noise.

A :class:`Phantom` is a background conductivity (S/m) with inclusions (circles, polygons),
evaluated at arbitrary points ``(P, 2)`` so that it can be put on any mesh (at cell
centroids for DG0, at vertices for P1) or on the KTC pixel grid.  Later inclusions paint
over earlier ones.  Simulated data should come from a finer mesh than the one the
inversion uses (no inverse crime): :func:`simulate` takes the forward model as an argument.

KTC-like phantoms (:func:`ktc_like_phantom`, the validation set of :mod:`eit.simulated_set`):
1-3 non-overlapping objects in water, each a disk, a random polygon, a star, a thin bar or a
non-convex L- or C-shape, resistive (plastic) or conductive (metal) with the tank's
contrasts.  The ranges are :data:`KTC_LIKE` (sizes as equivalent-area radii, fractions of the
tank radius: the training targets' objects have 0.19-0.30).

Noise (:func:`add_noise`): the organisers' model, Gaussian with standard deviation
``sqrt((a |u_i|)^2 + (b max|u|)^2)`` (``a = 5%`` of each value, ``b = 1%`` of the largest),
or a relative Gaussian ``a |u_i|`` (``b = 0``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from eit.ktc import noise_std

__all__ = ["Circle", "Polygon", "Phantom", "two_inclusion", "two_disks", "random_phantom", "add_noise", "simulate",
           "KTC_LIKE", "SHAPES", "ktc_like_phantom", "equivalent_radius"]


@dataclass(frozen=True)
class Circle:
    """Disk of centre ``(cx, cy)`` (m) and radius ``r`` (m) with conductivity ``sigma`` (S/m)."""

    cx: float
    cy: float
    r: float
    sigma: float

    kind: str = "circle"

    def contains(self, p: np.ndarray) -> np.ndarray:
        return (p[:, 0] - self.cx) ** 2 + (p[:, 1] - self.cy) ** 2 <= self.r**2

    @property
    def area(self) -> float:
        return float(np.pi * self.r**2)


@dataclass(frozen=True)
class Polygon:
    """Simple polygon (vertices ``(K, 2)``, m, either orientation) of conductivity ``sigma``."""

    vertices: tuple
    sigma: float
    kind: str = "polygon"

    @property
    def area(self) -> float:
        """Shoelace area (m^2) of the simple polygon."""
        v = np.asarray(self.vertices, dtype=np.float64)
        return float(0.5 * abs(np.dot(v[:, 0], np.roll(v[:, 1], -1)) - np.dot(v[:, 1], np.roll(v[:, 0], -1))))

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
            raise ValueError(f"a polygon needs at least 3 vertices (K, 2), got shape {v.shape}")

    def contains(self, p: np.ndarray) -> np.ndarray:
        # Even-odd rule: count crossings of a ray towards +x.
        v = np.asarray(self.vertices, dtype=np.float64)
        x, y = p[:, 0:1], p[:, 1:2]
        x0, y0 = v[:, 0], v[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        straddle = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        return (np.sum(straddle & (x < xc), axis=1) % 2) == 1


@dataclass
class Phantom:
    """Background conductivity plus inclusions; ``phantom(points) -> sigma``.

    Attributes
    ----------
    background: conductivity (S/m) outside every inclusion; must be positive.
    inclusions: circles and polygons, painted in order.
    """

    background: float
    inclusions: Sequence = field(default_factory=list)

    def __post_init__(self) -> None:
        values = [self.background] + [s.sigma for s in self.inclusions]
        if not all(np.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"conductivities must be positive and finite (S/m), got {values}")

    def __call__(self, points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] < 2:
            raise ValueError(f"points must be (P, 2), got shape {p.shape}")
        p = p[:, :2]
        sigma = np.full(len(p), float(self.background))
        for shape in self.inclusions:
            sigma[shape.contains(p)] = shape.sigma
        return sigma

    def at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``sigma`` at coordinate arrays ``x``, ``y`` (one shape), e.g. ``phantom.at(*c.T)``;
        the ``sigma(x, y)`` callable :class:`eit.parallel.ParallelCEM` evaluates on each rank."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        return self(np.c_[x.ravel(), y.ravel()]).reshape(x.shape)

    def classes(self, points: np.ndarray) -> np.ndarray:
        """KTC-style labels at the points: 0 background, 1 resistive, 2 conductive."""
        s = self(points)
        return np.where(s > self.background, 2, np.where(s < self.background, 1, 0)).astype(np.uint8)


def two_inclusion(radius: float = 0.115, background: float = 1.0, contrast: float = 5.0) -> Phantom:
    """The demo phantom: a conductive disk and a resistive square in a disk of ``radius``."""
    R = radius
    square = np.array([[0.15, -0.45], [0.55, -0.45], [0.55, -0.05], [0.15, -0.05]]) * R
    return Phantom(
        background,
        [Circle(-0.35 * R, 0.3 * R, 0.25 * R, background * contrast),
         Polygon(tuple(map(tuple, square)), background / contrast)],
    )


def two_disks(background: float = 0.8) -> Phantom:
    """The forward model's test tank: ``background`` S/m water (tap water of the KTC tank),
    a resistive 0.1 S/m disk of radius 0.025 m at (0.04, 0.03) and a conductive 3 S/m disk
    of radius 0.02 m at (-0.05, -0.02)."""
    return Phantom(background, [Circle(0.04, 0.03, 0.025, 0.1), Circle(-0.05, -0.02, 0.02, 3.0)])


def random_phantom(rng: np.random.Generator, radius: float = 0.115, background: float = 1.0,
                   n_inclusions: int = 2, contrast: float = 5.0, max_tries: int = 200) -> Phantom:
    """Random non-overlapping circles and triangles/quadrilaterals, conductive or resistive."""
    shapes: list = []
    discs: list[tuple[float, float, float]] = []
    for _ in range(max_tries):
        if len(shapes) == n_inclusions:
            break
        r = rng.uniform(0.12, 0.25) * radius
        rho = rng.uniform(0, 0.8 * radius - r)
        phi = rng.uniform(0, 2 * np.pi)
        cx, cy = rho * np.cos(phi), rho * np.sin(phi)
        if any(np.hypot(cx - x, cy - y) < r + q + 0.03 * radius for x, y, q in discs):
            continue
        discs.append((cx, cy, r))
        sigma = background * contrast if rng.random() < 0.5 else background / contrast
        if rng.random() < 0.5:
            shapes.append(Circle(cx, cy, r, sigma))
        else:
            k = int(rng.integers(3, 5))
            if k > 3:
                ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            else:
                ang = np.array([0, 2.1, 4.2]) + rng.uniform(0, 2 * np.pi)
            verts = np.c_[cx + r * np.cos(ang), cy + r * np.sin(ang)]
            shapes.append(Polygon(tuple(map(tuple, verts)), sigma))
    return Phantom(background, shapes)


#: ranges of :func:`ktc_like_phantom`: object count, equivalent-area radius and distance of
#: the object's bounding disk from the wall (fractions of the tank radius), conductivity ratios
#: to the background (log-uniform: plastic is nearly insulating, metal far more conductive
#: than tap water), the minimum gap between objects (fraction of the radius)
KTC_LIKE = {"n_objects": (1, 3), "size": (0.12, 0.33), "wall_gap": 0.06, "gap": 0.05,
            "resistive": (1e-3, 0.05), "conductive": (10.0, 200.0)}
#: the object shapes of :func:`ktc_like_phantom`
SHAPES = ("circle", "polygon", "star", "bar", "L", "C")


def equivalent_radius(shape) -> float:
    """``sqrt(area / pi)`` (m) of a circle or polygon."""
    return float(np.sqrt(shape.area / np.pi))


def _outline(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices ``(K, 2)`` of a unit-sized shape centred at 0 (the circle is handled apart)."""
    if kind == "polygon":  # 5-8 vertices at jittered angles and radii
        k = int(rng.integers(5, 9))
        ang = np.sort((np.arange(k) + rng.uniform(-0.3, 0.3, k)) * 2 * np.pi / k)
        rad = rng.uniform(0.7, 1.0, k)
    elif kind == "star":  # 4-7 points, inner radius 40-65 % of the outer
        k = int(rng.integers(4, 8))
        ang = np.arange(2 * k) * np.pi / k
        rad = np.where(np.arange(2 * k) % 2 == 0, 1.0, rng.uniform(0.4, 0.65))
    elif kind == "bar":  # thin rectangle, width 12-30 % of its length
        w = rng.uniform(0.12, 0.3)
        return np.array([[-1, -w], [1, -w], [1, w], [-1, w]], dtype=np.float64)
    elif kind == "L":
        t = rng.uniform(0.3, 0.5)
        return np.array([[-1, -1], [1, -1], [1, -1 + 2 * t], [-1 + 2 * t, -1 + 2 * t], [-1 + 2 * t, 1], [-1, 1]],
                        dtype=np.float64) * 0.8
    elif kind == "C":  # an annular sector: a thick arc open on one side
        inner, span = rng.uniform(0.45, 0.65), rng.uniform(1.2, 1.6) * np.pi
        a = np.linspace(-span / 2, span / 2, 24)
        return np.r_[np.c_[np.cos(a), np.sin(a)], inner * np.c_[np.cos(a[::-1]), np.sin(a[::-1])]]
    else:
        raise ValueError(f"unknown shape {kind!r}; choose from {', '.join(SHAPES)}")
    return np.c_[rad * np.cos(ang), rad * np.sin(ang)]


def _ktc_like_object(kind: str, size: float, centre: tuple[float, float], sigma: float,
                     rng: np.random.Generator):
    """One object of equivalent-area radius ``size`` (m) at ``centre``, randomly rotated;
    returns the shape and its bounding radius (m)."""
    if kind == "circle":
        return Circle(centre[0], centre[1], size, sigma), size
    v = _outline(kind, rng)
    v *= size / np.sqrt(Polygon(tuple(map(tuple, v)), 1.0).area / np.pi)  # scale to the area
    a = rng.uniform(0, 2 * np.pi)
    v = v @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) + np.asarray(centre)
    bound = float(np.max(np.linalg.norm(v - np.asarray(centre), axis=1)))
    return Polygon(tuple(map(tuple, v)), sigma, kind=kind), bound


def ktc_like_phantom(rng: np.random.Generator, radius: float = 0.115, background: float = 0.8,
                     max_tries: int = 500) -> Phantom:
    """A random KTC-like target: 1-3 non-overlapping objects (:data:`SHAPES`, :data:`KTC_LIKE`)
    inside a tank of ``radius`` (m) filled with water of ``background`` S/m.

    Each object: a shape drawn uniformly, its equivalent-area radius uniform in the size
    range, resistive or conductive with probability 1/2 and its conductivity ratio
    log-uniform in that class's range; it is placed uniformly in the disk that keeps its
    bounding disk ``wall_gap`` from the wall, and redrawn while it comes closer than ``gap``
    to an earlier object.
    """
    R, c = float(radius), KTC_LIKE
    n = int(rng.integers(c["n_objects"][0], c["n_objects"][1] + 1))
    shapes, discs = [], []
    for _ in range(n):
        # The shape and class are drawn once per object, so that rejections (a long bar that
        # does not fit) re-place it instead of favouring compact shapes.
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        lo, hi = c["conductive"] if rng.random() < 0.5 else c["resistive"]
        sigma = background * float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        for _ in range(max_tries):
            size = rng.uniform(*c["size"]) * R
            rho, phi = (1 - c["wall_gap"]) * R * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            centre = (rho * np.cos(phi), rho * np.sin(phi))
            shape, bound = _ktc_like_object(kind, size, centre, sigma, rng)
            inside = rho + bound <= (1 - c["wall_gap"]) * R
            if inside and all(np.hypot(centre[0] - x, centre[1] - y) >= bound + b + c["gap"] * R
                              for x, y, b in discs):
                discs.append((*centre, bound))
                shapes.append(shape)
                break
    if not shapes:
        raise RuntimeError("could not place any object (the size range is too large for the tank)")
    return Phantom(background, shapes)


def add_noise(u: np.ndarray, rng: np.random.Generator, relative: float = 0.05,
              of_max: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Noisy copy of ``u`` and the noise standard deviations used (see the module docstring)."""
    s = noise_std(u, relative, of_max)
    return np.asarray(u, dtype=np.float64) + s * rng.standard_normal(np.shape(u)), s


def simulate(phantom: Phantom, forward: Callable[[np.ndarray], np.ndarray], points: np.ndarray,
             rng: np.random.Generator | None = None, relative: float = 0.0, of_max: float = 0.0):
    """Data of ``phantom`` through ``forward`` (sigma at ``points`` -> voltages), with noise.

    ``points`` are where ``forward`` expects sigma (cell centroids of a *fine* mesh).
    Returns ``(u_noisy, u_clean, std)``; without noise ``std`` is None.
    """
    u = np.asarray(forward(phantom(points)), dtype=np.float64)
    if relative == 0 and of_max == 0:
        return u, u, None
    noisy, s = add_noise(u, rng if rng is not None else np.random.default_rng(0), relative, of_max)
    return noisy, u, s
