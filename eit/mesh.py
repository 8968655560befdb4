"""Meshes for EIT: 2-D domains with electrodes as tagged boundary segments.

Every mesh here is made with gmsh (headless) and handed to DOLFINx with
``dolfinx.io.gmsh.model_to_mesh``.  The boundary is split into segments; the segments
under electrode ``l`` (``l = 0..L-1``) carry the facet tag ``l + 1``
(:func:`electrode_tag`), the gaps between electrodes carry :data:`GAP_TAG`, and the
cells carry :data:`DOMAIN_TAG`.  The mesh is refined near the electrodes: the target
element size grows linearly from ``h_electrode`` on an electrode to ``h`` at a distance
``refine_distance`` from it (a gmsh Distance + Threshold field).

Domains
-------
* :func:`disk_mesh`: a disk of radius ``R`` (m) with electrodes as arcs, given by their
  centre angles (rad, counter-clockwise from the +x axis) and one angular extent (rad)
  or one width (arc length, m).
* :func:`polygon_mesh`: a simple polygon with electrodes as straight pieces of its
  edges, given by the direction (angle from the polygon's centroid) of their centre and
  their width (m); an electrode must lie on one edge.
* :func:`ktc_mesh`: the KTC 2023 water tank (radius 0.115 m, 32 electrodes).  Electrode
  ``l`` covers the angles of the organisers' mesh (``Mesh_sparse.mat``: the boundary
  segments ``elfaces`` of node coordinates ``g``): centre ``pi/2 + l * 2 pi / 32``,
  extent ``2 pi / 64`` (half the pitch), numbered counter-clockwise from the top.
  (``elcenterangles`` in that file is the same list shifted by ``-pi/2``.)
  :func:`ktc_electrode_arcs` reads the arcs from the file when it is given.

Sizes: :data:`PRESETS` holds element sizes (relative to the radius) that give about
1.5k and 10k vertices on the KTC tank (``ktc_mesh("1500")``, ``ktc_mesh("10000")``).

Parallel: under MPI, gmsh runs on rank 0 only and DOLFINx distributes the mesh.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

import dolfinx_solver  # noqa: F401  (orders MPI before the DOLFINx bindings)
from mpi4py import MPI

import dolfinx  # noqa: E402
from dolfinx.io import gmsh as dfx_gmsh  # noqa: E402

__all__ = [
    "EITMesh",
    "disk_mesh",
    "polygon_mesh",
    "ktc_mesh",
    "ktc_electrode_arcs",
    "ktc_default_arcs",
    "disk_mesh_from_arcs",
    "electrode_tag",
    "GAP_TAG",
    "DOMAIN_TAG",
    "KTC_RADIUS",
    "KTC_N_ELECTRODES",
    "PRESETS",
]

GAP_TAG = 1000
DOMAIN_TAG = 1
KTC_RADIUS = 0.115
KTC_N_ELECTRODES = 32

#: element sizes and refinement distance (fractions of the radius)
#: ``(h, h_electrode, refine_distance)`` for target vertex counts on the KTC tank.  Chosen
#: by measuring the data error against a 50k-vertex mesh (docs/eit_forward.md): at 1.5k
#: vertices moving vertices to the electrodes does not help (absolute data 6-9%, and the
#: difference data get worse), at 10k finer electrodes lower both the absolute (1.4% vs
#: 2.3% for (0.0275, 0.0088, 0.25)) and the difference-data error (1.5% vs 2.0%).
PRESETS: dict[str, tuple[float, float, float]] = {
    "1500": (0.076, 0.024, 0.25),
    "10000": (0.035, 0.0025, 0.1),
}


def electrode_tag(l: int) -> int:
    """Facet tag of electrode ``l`` (0-based)."""
    return l + 1


@dataclass
class EITMesh:
    """A DOLFINx mesh with electrodes.

    Attributes
    ----------
    mesh: the ``dolfinx.mesh.Mesh`` (triangles, coordinates in m).
    facet_tags: ``MeshTags`` of boundary facets: ``l + 1`` under electrode ``l``,
        :data:`GAP_TAG` elsewhere on the boundary.
    n_electrodes: number of electrodes ``L``.
    electrode_arcs: ``(L, 2)`` start/end angle (rad) of each electrode for disks; for
        polygons the ``(L, 2, 2)`` end points.  Informational.
    kind: ``"disk"``, ``"polygon"`` or ``"ktc"``.
    radius: disk radius (m) or the polygon's largest centroid distance.
    """

    mesh: dolfinx.mesh.Mesh
    facet_tags: dolfinx.mesh.MeshTags
    n_electrodes: int
    electrode_arcs: np.ndarray
    kind: str = "disk"
    radius: float = 1.0
    info: dict = field(default_factory=dict)

    @property
    def comm(self):
        return self.mesh.comm

    def num_vertices(self) -> int:
        """Global number of mesh vertices."""
        im = self.mesh.topology.index_map(0)
        return int(im.size_global)

    def num_cells(self) -> int:
        """Global number of cells."""
        self.mesh.topology.create_entities(2)
        return int(self.mesh.topology.index_map(2).size_global)


# --------------------------------------------------------------------------- gmsh core


def _check_arcs(starts: np.ndarray, ends: np.ndarray) -> None:
    """Arcs given as angles in [0, 2pi) with positive length; they must not overlap."""
    lengths = (ends - starts)
    if np.any(lengths <= 0) or np.any(lengths >= 2 * np.pi):
        raise ValueError("every electrode needs a positive angular extent below 2*pi")
    order = np.argsort(starts)
    s, e = starts[order], starts[order] + lengths[order]
    nxt = np.concatenate([s[1:], [s[0] + 2 * np.pi]])
    if np.any(e >= nxt - 1e-12):
        raise ValueError(
            "electrodes overlap or touch: reduce the extent/width or move the centre angles"
        )


def _gmsh_session():
    """A fresh gmsh session: gmsh keeps state between models in one session (its random
    perturbation of points), which made a second identical mesh differ by 1e-5 m; a fresh
    session makes every call reproducible."""
    import gmsh

    if gmsh.isInitialized():
        gmsh.finalize()
    gmsh.initialize(interruptible=False)
    gmsh.option.setNumber("General.Terminal", 0)
    gmsh.option.setNumber("General.Verbosity", 0)
    return gmsh


def _size_field(gmsh, electrode_curves: list[int], h: float, h_el: float, dist: float):
    """Element size h_el on the electrode curves, growing linearly to h at distance dist."""
    f_d = gmsh.model.mesh.field.add("Distance")
    gmsh.model.mesh.field.setNumbers(f_d, "CurvesList", electrode_curves)
    gmsh.model.mesh.field.setNumber(f_d, "Sampling", 40)
    f_t = gmsh.model.mesh.field.add("Threshold")
    gmsh.model.mesh.field.setNumber(f_t, "InField", f_d)
    gmsh.model.mesh.field.setNumber(f_t, "SizeMin", h_el)
    gmsh.model.mesh.field.setNumber(f_t, "SizeMax", h)
    gmsh.model.mesh.field.setNumber(f_t, "DistMin", 0.0)
    gmsh.model.mesh.field.setNumber(f_t, "DistMax", dist)
    gmsh.model.mesh.field.setAsBackgroundMesh(f_t)
    gmsh.option.setNumber("Mesh.MeshSizeFromPoints", 0)
    gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 0)
    gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 0)
    gmsh.option.setNumber("Mesh.Algorithm", 6)  # Frontal-Delaunay: well-shaped triangles


def _finish(gmsh, comm, curves_by_tag: dict[int, list[int]], surface: int, h, h_el, dist,
            n_electrodes: int, seed: int = 0):
    """Physical groups, size field, meshing, and conversion to DOLFINx."""
    gmsh.model.geo.synchronize()
    for tag, curves in curves_by_tag.items():
        name = "gap" if tag == GAP_TAG else f"electrode_{tag}"
        gmsh.model.addPhysicalGroup(1, curves, tag=tag, name=name)
    gmsh.model.addPhysicalGroup(2, [surface], tag=DOMAIN_TAG, name="domain")
    el_curves = [c for t, cs in curves_by_tag.items() if t != GAP_TAG for c in cs]
    _size_field(gmsh, el_curves, h, h_el, dist)
    gmsh.option.setNumber("Mesh.RandomSeed", seed)
    gmsh.model.mesh.generate(2)


def _to_dolfinx(comm, build, *args):
    """Run the gmsh builder on rank 0 and distribute the DOLFINx mesh."""
    gmsh = _gmsh_session() if comm.rank == 0 else None
    try:
        if comm.rank == 0:
            gmsh.model.add("eit")
            build(gmsh, *args)
        data = dfx_gmsh.model_to_mesh(gmsh.model if comm.rank == 0 else None, comm, 0, gdim=2)
    finally:
        if comm.rank == 0:
            gmsh.finalize()
    return data


# --------------------------------------------------------------------------- disk


def _disk_builder(gmsh, R, starts, ends, h, h_el, dist):
    geo = gmsh.model.geo
    lc = h
    centre = geo.addPoint(0.0, 0.0, 0.0, lc)
    # Breakpoints around the circle: each electrode start/end, tagged by what follows it.
    marks = []
    for l, (a0, a1) in enumerate(zip(starts, ends)):
        marks.append((a0 % (2 * np.pi), electrode_tag(l)))
        marks.append((a1 % (2 * np.pi), GAP_TAG))
    marks.sort()
    # gmsh circle arcs must be shorter than pi: split long pieces.
    angles, tags = [], []
    for i, (a, t) in enumerate(marks):
        b = marks[(i + 1) % len(marks)][0] + (2 * np.pi if i == len(marks) - 1 else 0.0)
        n_split = max(1, int(math.ceil((b - a) / (np.pi / 2))))
        for k in range(n_split):
            angles.append(a + (b - a) * k / n_split)
            tags.append(t)
    pts = [geo.addPoint(R * math.cos(a), R * math.sin(a), 0.0, lc) for a in angles]
    curves_by_tag: dict[int, list[int]] = {}
    loop = []
    for i, t in enumerate(tags):
        c = geo.addCircleArc(pts[i], centre, pts[(i + 1) % len(pts)])
        loop.append(c)
        curves_by_tag.setdefault(t, []).append(c)
    cl = geo.addCurveLoop(loop)
    surf = geo.addPlaneSurface([cl])
    _finish(gmsh, None, curves_by_tag, surf, h, h_el, dist, len(starts))


def disk_mesh(
    radius: float = 1.0,
    n_electrodes: int = 16,
    *,
    centers: Sequence[float] | None = None,
    extent: float | None = None,
    width: float | None = None,
    h: float | None = None,
    h_electrode: float | None = None,
    refine_distance: float | None = None,
    comm=MPI.COMM_WORLD,
) -> EITMesh:
    """A disk of ``radius`` (m) with ``n_electrodes`` electrodes as boundary arcs.

    Parameters
    ----------
    centers: centre angles (rad, counter-clockwise from +x); default equally spaced
        starting at ``pi/2`` (electrode 0 at the top), counter-clockwise.
    extent: angular extent of each electrode (rad); default half the pitch.
    width: arc length of each electrode (m), alternative to ``extent``.
    h, h_electrode: target element sizes (m) in the interior and on the electrodes;
        default ``radius/16`` and ``h/4``.
    refine_distance: distance over which the size grows from ``h_electrode`` to ``h``;
        default ``radius/4``.
    """
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    if n_electrodes < 1:
        raise ValueError(f"n_electrodes must be at least 1, got {n_electrodes}")
    if extent is not None and width is not None:
        raise ValueError("give either extent (rad) or width (m), not both")
    pitch = 2 * np.pi / n_electrodes
    if centers is None:
        centers = np.pi / 2 + pitch * np.arange(n_electrodes)
    centers = np.asarray(centers, dtype=float).ravel()
    if centers.size != n_electrodes:
        raise ValueError(f"centers has {centers.size} angles for {n_electrodes} electrodes")
    if width is not None:
        extent = width / radius
    if extent is None:
        extent = pitch / 2
    starts = (centers - extent / 2) % (2 * np.pi)
    ends = starts + extent
    return disk_mesh_from_arcs(radius, np.stack([starts, ends], 1), h=h, h_electrode=h_electrode,
                               refine_distance=refine_distance, comm=comm)


def disk_mesh_from_arcs(radius: float, arcs: np.ndarray, *, h=None, h_electrode=None,
                        refine_distance=None, comm=MPI.COMM_WORLD, kind="disk") -> EITMesh:
    """Disk mesh with electrode ``l`` covering the angles ``arcs[l, 0] .. arcs[l, 1]`` (rad)."""
    arcs = np.asarray(arcs, dtype=float)
    if arcs.ndim != 2 or arcs.shape[1] != 2:
        raise ValueError(f"arcs must have shape (L, 2) (start, end angle), got {arcs.shape}")
    starts = arcs[:, 0] % (2 * np.pi)
    ends = starts + (arcs[:, 1] - arcs[:, 0])
    _check_arcs(starts, ends)
    h = radius / 16 if h is None else float(h)
    h_el = h / 4 if h_electrode is None else float(h_electrode)
    dist = radius / 4 if refine_distance is None else float(refine_distance)
    if h <= 0 or h_el <= 0:
        raise ValueError("element sizes h and h_electrode must be positive")
    data = _to_dolfinx(comm, _disk_builder, radius, starts, ends, h, h_el, dist)
    return EITMesh(data.mesh, data.facet_tags, len(starts), np.stack([starts, ends], 1),
                   kind=kind, radius=float(radius),
                   info={"h": h, "h_electrode": h_el, "refine_distance": dist})


# --------------------------------------------------------------------------- polygon


def _polygon_builder(gmsh, verts, el_pos, h, h_el, dist):
    """verts: (n, 2) counter-clockwise; el_pos: per edge a sorted list of (t0, t1, l)."""
    geo = gmsh.model.geo
    n = len(verts)
    pts, tags = [], []
    for i in range(n):
        p, q = verts[i], verts[(i + 1) % n]
        pts.append(tuple(p))
        tags.append(GAP_TAG)
        for t0, t1, l in el_pos.get(i, []):
            pts.append(tuple(p + t0 * (q - p)))
            tags.append(electrode_tag(l))
            pts.append(tuple(p + t1 * (q - p)))
            tags.append(GAP_TAG)
    # drop zero-length gap pieces (electrode ending on a polygon vertex)
    keep_pts, keep_tags = [], []
    for i, (pt, t) in enumerate(zip(pts, tags)):
        if keep_pts and np.allclose(pt, keep_pts[-1], atol=1e-14):
            keep_tags[-1] = t
            continue
        keep_pts.append(pt)
        keep_tags.append(t)
    if np.allclose(keep_pts[-1], keep_pts[0], atol=1e-14):
        keep_pts.pop()
        keep_tags.pop()
    ids = [geo.addPoint(x, y, 0.0, h) for x, y in keep_pts]
    curves_by_tag: dict[int, list[int]] = {}
    loop = []
    for i, t in enumerate(keep_tags):
        c = geo.addLine(ids[i], ids[(i + 1) % len(ids)])
        loop.append(c)
        curves_by_tag.setdefault(t, []).append(c)
    surf = geo.addPlaneSurface([geo.addCurveLoop(loop)])
    _finish(gmsh, None, curves_by_tag, surf, h, h_el, dist, None)


def polygon_mesh(
    vertices: np.ndarray,
    centers: Sequence[float],
    width: float,
    *,
    h: float | None = None,
    h_electrode: float | None = None,
    refine_distance: float | None = None,
    comm=MPI.COMM_WORLD,
) -> EITMesh:
    """A simple polygon (vertices ``(n, 2)`` in m) with straight electrodes on its edges.

    Electrode ``l`` is centred where the ray from the polygon's vertex centroid at angle
    ``centers[l]`` (rad) leaves the polygon, and has length ``width`` (m) along that edge;
    it must fit inside one edge.
    """
    v = np.asarray(vertices, dtype=float)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
        raise ValueError(f"vertices must have shape (n >= 3, 2), got {v.shape}")
    area2 = np.sum(v[:, 0] * np.roll(v[:, 1], -1) - np.roll(v[:, 0], -1) * v[:, 1])
    if abs(area2) < 1e-14:
        raise ValueError("polygon has zero area")
    if area2 < 0:
        v = v[::-1].copy()
    c = v.mean(0)
    n = len(v)
    el_pos: dict[int, list] = {}
    ends = []
    for l, ang in enumerate(np.asarray(centers, dtype=float).ravel()):
        d = np.array([math.cos(ang), math.sin(ang)])
        hit = None
        for i in range(n):
            p, q = v[i], v[(i + 1) % n]
            e = q - p
            # solve c + s d = p + t e
            M = np.array([[d[0], -e[0]], [d[1], -e[1]]])
            if abs(np.linalg.det(M)) < 1e-14:
                continue
            s, t = np.linalg.solve(M, p - c)
            if s > 0 and -1e-12 <= t <= 1 + 1e-12 and (hit is None or s < hit[0]):
                hit = (s, i, t)
        if hit is None:
            raise ValueError(f"electrode {l}: the ray at angle {ang} does not meet the polygon")
        _, i, t = hit
        edge_len = np.linalg.norm(v[(i + 1) % n] - v[i])
        dt = width / edge_len / 2
        if t - dt < -1e-12 or t + dt > 1 + 1e-12:
            raise ValueError(
                f"electrode {l} (centre angle {ang:.4f} rad, width {width} m) does not fit "
                f"on polygon edge {i} (length {edge_len:.4g} m)")
        el_pos.setdefault(i, []).append((max(t - dt, 0.0), min(t + dt, 1.0), l))
        p = v[i]
        e = v[(i + 1) % n] - p
        ends.append([p + (t - dt) * e, p + (t + dt) * e])
    for i, lst in el_pos.items():
        lst.sort()
        for a, b in zip(lst[:-1], lst[1:]):
            if a[1] >= b[0] - 1e-12:
                raise ValueError(f"electrodes {a[2]} and {b[2]} overlap on polygon edge {i}")
    R = float(np.max(np.linalg.norm(v - c, axis=1)))
    h = R / 16 if h is None else float(h)
    h_el = h / 4 if h_electrode is None else float(h_electrode)
    dist = R / 4 if refine_distance is None else float(refine_distance)
    data = _to_dolfinx(comm, _polygon_builder, v, el_pos, h, h_el, dist)
    return EITMesh(data.mesh, data.facet_tags, len(ends), np.asarray(ends), kind="polygon",
                   radius=R, info={"h": h, "h_electrode": h_el, "refine_distance": dist})


# --------------------------------------------------------------------------- KTC tank


def ktc_default_arcs() -> np.ndarray:
    """Electrode arcs (rad) of the KTC 2023 tank, as in the organisers' meshes.

    Electrode ``l`` (0-based) spans ``pi/2 + l*pitch -+ pitch/4`` with ``pitch = 2pi/32``.
    """
    pitch = 2 * np.pi / KTC_N_ELECTRODES
    c = np.pi / 2 + pitch * np.arange(KTC_N_ELECTRODES)
    return np.stack([c - pitch / 4, c + pitch / 4], 1)


def ktc_electrode_arcs(mesh_file: str | Path) -> np.ndarray:
    """Electrode arcs ``(32, 2)`` (start, end angle in rad, counter-clockwise) read from an
    organisers' mesh file (``Mesh_sparse.mat`` / ``Mesh_dense.mat``: node coordinates ``g``,
    boundary segments ``elfaces`` under each electrode; node indices are 0-based there)."""
    import scipy.io

    path = Path(mesh_file)
    if not path.is_file():
        raise FileNotFoundError(f"KTC mesh file {path} does not exist")
    d = scipy.io.loadmat(str(path))
    for key in ("g", "elfaces"):
        if key not in d:
            raise ValueError(f"{path}: field '{key}' missing (expected the organisers' mesh)")
    g = np.asarray(d["g"], dtype=float)
    arcs = []
    for ef in np.asarray(d["elfaces"]).ravel():
        nodes = np.unique(np.asarray(ef, dtype=np.int64).ravel())
        if nodes.max() >= len(g):
            raise ValueError(f"{path}: elfaces refers to node {nodes.max()} of {len(g)}")
        ang = np.arctan2(g[nodes, 1], g[nodes, 0])
        # unwrap around the electrode's own mean direction
        ref = np.arctan2(np.sin(ang).mean(), np.cos(ang).mean())
        rel = (ang - ref + np.pi) % (2 * np.pi) - np.pi
        arcs.append([ref + rel.min(), ref + rel.max()])
    return np.asarray(arcs)


def ktc_mesh(size: str | tuple = "1500", *, mesh_file: str | Path | None = None,
             comm=MPI.COMM_WORLD) -> EITMesh:
    """The KTC 2023 tank: disk of radius 0.115 m with 32 electrodes.

    ``size`` is a key of :data:`PRESETS` (``"1500"`` or ``"10000"``: about that many
    vertices) or ``(h, h_electrode[, refine_distance])`` in m.  Electrode arcs come from ``mesh_file`` (an
    organisers' ``Mesh_*.mat``) when given, else from :func:`ktc_default_arcs` (the same
    arcs to 1e-6 rad).
    """
    if isinstance(size, str):
        if size not in PRESETS:
            raise ValueError(f"unknown KTC mesh size '{size}': use one of {sorted(PRESETS)}"
                             " or (h, h_electrode) in m")
        h, h_el, dist = (f * KTC_RADIUS for f in PRESETS[size])
    else:
        if len(size) not in (2, 3):
            raise ValueError("size must be a preset name or (h, h_electrode[, refine_distance])")
        h, h_el = size[:2]
        dist = size[2] if len(size) == 3 else 0.25 * KTC_RADIUS
    arcs = ktc_electrode_arcs(mesh_file) if mesh_file is not None else ktc_default_arcs()
    m = disk_mesh_from_arcs(KTC_RADIUS, arcs, h=h, h_electrode=h_el,
                            refine_distance=dist, comm=comm, kind="ktc")
    return m
