"""The surface validation suite: procedural shapes with a known clean surface, generated here.

Every shape is a ``trimesh.Trimesh`` centred at the origin and scaled to a bounding-box
diagonal of 1, so noise levels and lengths are fractions of the diagonal throughout.
Three families, chosen so that no single kind of geometry decides the benchmark:

* **CAD** (sharp edges, flat faces; exact booleans through ``manifold3d`` and polygon
  extrusions through ``shapely``): a block with a bore, a plate with holes, an L bracket,
  a block with a cylindrical boss, a stepped block, a hexagonal nut, a 3-D cross;
* **organic** (smooth, curved): a rounded-cube and a star-like superquadric, a trefoil
  torus knot (a circle swept along the knot), a blob (a sphere with a low-frequency radial
  displacement), a height field (an open surface with a boundary);
* **thin** (two sheets closer than a few noise levels at 1 %): a thin plate and a cup.

The Stanford bunny (``bun_zipper.ply``) joins as one row among many when the data folder
is present (:func:`bunny`).  :data:`SHAPES` maps names to builders; :func:`build` returns
the normalised mesh.  Nothing here is random: the meshes are the same on every machine,
and all randomness of the inputs lives in :mod:`geoprior.scans` under fixed seeds.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["SHAPES", "FAMILIES", "SAMPLINGS", "NOISES", "SIZES", "Case", "build", "bunny", "normalise", "names",
           "cases", "make_input", "case_seed"]

#: how a shape becomes an input cloud (:mod:`geoprior.scans`)
SAMPLINGS = ("uniform", "scan")
#: noise std as a fraction of the bounding-box diagonal
NOISES = (0.0025, 0.005, 0.01)
#: input sizes
SIZES = (20_000, 100_000)


def normalise(mesh):
    """``mesh`` translated to its bounding-box centre and scaled to a bbox diagonal of 1."""
    lo, hi = mesh.bounds
    mesh = mesh.copy()
    mesh.apply_translation(-(lo + hi) / 2)
    mesh.apply_scale(1.0 / float(np.linalg.norm(hi - lo)))
    return mesh


def _tm():
    import trimesh

    return trimesh


def _box(extents, centre=(0.0, 0.0, 0.0)):
    tm = _tm()
    return tm.creation.box(extents=extents, transform=tm.transformations.translation_matrix(centre))


def _cylinder(radius, height, centre=(0.0, 0.0, 0.0), axis="z", sections=96):
    tm = _tm()
    c = tm.creation.cylinder(radius=radius, height=height, sections=sections)
    if axis == "x":
        c.apply_transform(tm.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
    elif axis == "y":
        c.apply_transform(tm.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    c.apply_translation(centre)
    return c


def _boolean(op: str, meshes):
    tm = _tm()
    try:
        fn = {"union": tm.boolean.union, "difference": tm.boolean.difference}[op]
        return fn(meshes, engine="manifold")
    except (ImportError, ValueError) as exc:  # no manifold3d backend
        raise RuntimeError("the CAD shapes of the suite need the 'manifold3d' package "
                           "(pip install -e '.[benchmark]')") from exc


def _extrude(polygon, height):
    tm = _tm()
    try:
        return tm.creation.extrude_polygon(polygon, height)
    except (ImportError, ValueError) as exc:
        raise RuntimeError("the extruded shapes of the suite need 'shapely' and 'mapbox-earcut' "
                           "(pip install -e '.[benchmark]')") from exc


def block_with_bore():
    """A 1 x 0.7 x 0.5 block minus a through-bore of radius 0.15 along y."""
    return _boolean("difference", [_box((1.0, 0.7, 0.5)), _cylinder(0.15, 1.0, axis="y")])


def plate_with_holes():
    """A 1 x 0.6 plate 0.12 thick with three round holes and one square hole (an extrusion)."""
    from shapely.geometry import Point, Polygon, box

    outer = box(-0.5, -0.3, 0.5, 0.3)
    holes = [Point(x, 0.05).buffer(0.09, 32) for x in (-0.3, 0.0)] + [Point(0.3, -0.1).buffer(0.06, 32)]
    square = Polygon([(0.2, 0.08), (0.38, 0.08), (0.38, 0.22), (0.2, 0.22)])
    shape = outer
    for h in [*holes, square]:
        shape = shape.difference(h)
    return _extrude(shape, 0.12)


def l_bracket():
    """An L-shaped profile (legs 1 and 0.7, 0.15 thick) extruded 0.5, with one hole in each leg."""
    from shapely.geometry import Polygon

    profile = Polygon([(0, 0), (1.0, 0), (1.0, 0.15), (0.15, 0.15), (0.15, 0.7), (0, 0.7)])
    bracket = _extrude(profile, 0.5)
    return _boolean("difference", [bracket, _cylinder(0.08, 0.5, centre=(0.6, 0.075, 0.25), axis="y"),
                                   _cylinder(0.08, 0.5, centre=(0.075, 0.45, 0.25), axis="x")])


def block_with_boss():
    """A 1 x 0.8 x 0.3 block with a cylindrical boss (radius 0.22, height 0.35) on top."""
    return _boolean("union", [_box((1.0, 0.8, 0.3)), _cylinder(0.22, 0.35, centre=(0.1, 0.0, 0.3))])


def stepped_block():
    """Three stacked steps (a staircase of boxes): flat faces, concave and convex edges."""
    steps = [_box((1.0, 0.6, 0.2), (0.0, 0.0, 0.1)), _box((0.66, 0.6, 0.2), (0.17, 0.0, 0.3)),
             _box((0.33, 0.6, 0.2), (0.335, 0.0, 0.5))]
    return _boolean("union", steps)


def hex_nut():
    """A hexagonal prism (across corners 1) 0.35 thick minus a bore of radius 0.22."""
    from shapely.geometry import Polygon

    angles = np.arange(6) * np.pi / 3
    hexagon = Polygon(np.stack([0.5 * np.cos(angles), 0.5 * np.sin(angles)], 1))
    return _boolean("difference", [_extrude(hexagon, 0.35), _cylinder(0.22, 1.0, centre=(0, 0, 0.175))])


def cross():
    """Three orthogonal 1 x 0.25 x 0.25 bars through a common centre (a 3-D cross)."""
    return _boolean("union", [_box((1.0, 0.25, 0.25)), _box((0.25, 1.0, 0.25)), _box((0.25, 0.25, 0.8))])


def _radial_sphere(radius: Callable[[np.ndarray], np.ndarray], subdivisions: int = 6):
    """The icosphere with each unit direction ``d`` moved to ``radius(d) * d`` (a star-shaped surface)."""
    tm = _tm()
    s = tm.creation.icosphere(subdivisions=subdivisions)
    d = s.vertices / np.linalg.norm(s.vertices, axis=1, keepdims=True)
    return tm.Trimesh(d * radius(d)[:, None], s.faces, process=False)


def _superquadric(exponent: float, axes=(1.0, 0.8, 0.6)):
    """The superellipsoid ``sum_k |x_k / a_k|^(2/e) = 1`` as a radial surface over the sphere."""
    a = np.asarray(axes)

    def radius(d):
        return np.sum(np.abs(d / a) ** (2.0 / exponent), axis=1) ** (-exponent / 2.0)
    return _radial_sphere(radius)


def rounded_cube():
    """A superellipsoid with exponent 0.3: flat-ish faces joined by tight smooth rounds."""
    return _superquadric(0.3)


def star_quadric():
    """A superellipsoid with exponent 2.5: concave faces and six pointed tips."""
    return _superquadric(2.5, axes=(1.0, 1.0, 0.8))


def blob():
    """A sphere with a low-frequency radial displacement (a few spherical-harmonic-like bumps)."""
    def radius(d):
        x, y, z = d.T
        return 1.0 + 0.18 * np.sin(3 * x) * np.cos(2 * y) + 0.12 * np.cos(4 * z + x) + 0.08 * x * y * z * 4
    return _radial_sphere(radius)


def torus_knot(p: int = 2, q: int = 3, tube: float = 0.12, samples: int = 400):
    """A (p, q) torus knot (trefoil) swept with a circle of radius ``tube``."""
    tm = _tm()
    from shapely.geometry import Point

    t = np.linspace(0, 2 * np.pi, samples, endpoint=False)
    r = 0.6 + 0.3 * np.cos(q * t)
    path = np.stack([r * np.cos(p * t), r * np.sin(p * t), 0.3 * np.sin(q * t)], 1)
    path = np.vstack([path, path[:1]])
    try:
        return tm.creation.sweep_polygon(Point(0, 0).buffer(tube, 16), path, connect=True)
    except TypeError:  # older trimesh without ``connect``
        return tm.creation.sweep_polygon(Point(0, 0).buffer(tube, 16), path)


def height_field(n: int = 160):
    """An open terrain ``z = h(x, y)`` over the unit square (a surface with a boundary)."""
    tm = _tm()
    x, y = np.meshgrid(np.linspace(-0.5, 0.5, n), np.linspace(-0.5, 0.5, n), indexing="ij")
    z = 0.08 * np.sin(6 * x) * np.cos(5 * y) + 0.05 * np.exp(-((x - 0.2) ** 2 + (y + 0.1) ** 2) / 0.02)
    verts = np.stack([x, y, z], -1).reshape(-1, 3)
    i = np.arange(n - 1)[:, None] * n + np.arange(n - 1)[None, :]
    a, b, c, d = i.ravel(), i.ravel() + n, i.ravel() + n + 1, i.ravel() + 1
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return tm.Trimesh(verts, faces, process=False)


def thin_plate():
    """A 1 x 0.6 plate 0.05 thick (two sheets 5 % of the diagonal apart before scaling)."""
    return _box((1.0, 0.6, 0.05))


def cup():
    """A cylindrical cup (outer radius 0.4, height 0.7) with a 0.06 wall and a 0.08 floor."""
    outer = _cylinder(0.4, 0.7, centre=(0, 0, 0.35))
    inner = _cylinder(0.34, 0.7, centre=(0, 0, 0.08 + 0.35))
    return _boolean("difference", [outer, inner])


#: name -> (family, builder)
SHAPES: dict[str, tuple[str, Callable[[], object]]] = {
    "block_with_bore": ("cad", block_with_bore),
    "plate_with_holes": ("cad", plate_with_holes),
    "l_bracket": ("cad", l_bracket),
    "block_with_boss": ("cad", block_with_boss),
    "stepped_block": ("cad", stepped_block),
    "hex_nut": ("cad", hex_nut),
    "cross": ("cad", cross),
    "rounded_cube": ("organic", rounded_cube),
    "star_quadric": ("organic", star_quadric),
    "blob": ("organic", blob),
    "torus_knot": ("organic", torus_knot),
    "height_field": ("organic", height_field),
    "thin_plate": ("thin", thin_plate),
    "cup": ("thin", cup),
}
FAMILIES = ("cad", "organic", "thin")


def names(family: str | None = None) -> list[str]:
    """The shape names of ``family`` (all when None), in the suite's order."""
    return [k for k, (fam, _) in SHAPES.items() if family is None or fam == family]


def build(name: str):
    """The normalised mesh of shape ``name`` (``"bunny"``: :func:`bunny`)."""
    if name == "bunny":
        return bunny()
    if name not in SHAPES:
        raise ValueError(f"unknown suite shape {name!r}; choose one of {', '.join([*SHAPES, 'bunny'])}")
    mesh = SHAPES[name][1]()
    mesh.merge_vertices()
    return normalise(mesh)


def bunny(path: str | Path | None = None):
    """The Stanford bunny's reference surface ``bun_zipper.ply`` from the data folder, normalised."""
    from geoprior.io import load_mesh
    from shared.paths import require_data

    tm = _tm()
    path = Path(path) if path is not None else require_data("scans/bunny/bun_zipper.ply")
    v, f = load_mesh(path)
    return normalise(tm.Trimesh(v, f, process=False))


@dataclass(frozen=True)
class Case:
    """One input of the suite: ``shape`` sampled by ``sampling`` with ``n`` points and noise
    ``noise`` (a fraction of the diagonal)."""

    shape: str
    sampling: str
    noise: float
    n: int

    @property
    def key(self) -> str:
        return f"{self.shape}/{self.sampling}/{self.noise:g}/{self.n}"


def case_seed(case: Case) -> int:
    """A seed fixed by the case alone (CRC32 of its key), the same on every machine and run."""
    return zlib.crc32(case.key.encode()) % (2 ** 31)


def cases(shapes: list[str] | None = None, samplings=SAMPLINGS, noises=NOISES, sizes=SIZES) -> list[Case]:
    """All combinations, shape-major (default: every suite shape, no bunny)."""
    shapes = names() if shapes is None else shapes
    return [Case(s, m, float(e), int(n)) for s in shapes for m in samplings for e in noises for n in sizes]


def make_input(case: Case, mesh=None, views: int | None = None) -> np.ndarray:
    """The noisy cloud ``(n, 3)`` of ``case`` (``mesh``: its normalised shape, built when None).

    Scans use 3-6 viewpoints (drawn from the case's seed unless ``views`` is given)."""
    from geoprior.scans import range_scan, uniform_samples

    mesh = build(case.shape) if mesh is None else mesh
    seed = case_seed(case)
    if case.sampling == "uniform":
        return uniform_samples(mesh, case.n, case.noise, seed=seed)
    if case.sampling == "scan":
        views = int(np.random.default_rng(seed).integers(3, 7)) if views is None else views
        return range_scan(mesh, case.n, case.noise, views=views, seed=seed).points
    raise ValueError(f"unknown sampling {case.sampling!r}; choose one of {', '.join(SAMPLINGS)}")
