"""Point clouds in and out: PLY, OBJ, XYZ, PTS, NPY; Stanford ``.conf`` scan merging; PLY writers.

A cloud is an ``(N, 3)`` float64 array of positions (units of the file, e.g. metres for
the Stanford scans) and optionally an ``(N, 3)`` array of unit normals.

Stanford ``.conf`` files list range scans with their rigid alignment::

    bmesh NAME.ply tx ty tz qx qy qz qw

With ``R`` the rotation matrix of the unit quaternion ``(qx, qy, qz, qw)`` (Hamilton
convention, scalar last as written), a scan point ``p`` maps to ``R^T p + t``, i.e.
``p @ R + t`` for row vectors.  This convention was checked against ``bun_zipper.ply``:
the merged bunny scans lie a median 0.06 mm from its surface (other conventions: 22-25 mm).

Every loader ends in :func:`validate_cloud`, which rejects clouds no reconstruction can
use (empty, non-finite, a single point, all points identical) with a message naming the
file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Cloud", "load_cloud", "load_clouds", "load_conf", "quaternion_to_matrix", "validate_cloud",
    "write_cloud_ply", "write_mesh_ply", "load_mesh", "CLOUD_SUFFIXES",
]

CLOUD_SUFFIXES = (".ply", ".obj", ".off", ".stl", ".xyz", ".xyzn", ".pts", ".txt", ".npy", ".conf")


@dataclass
class Cloud:
    """Positions ``(N, 3)`` and optional unit normals ``(N, 3)`` (float64)."""

    points: np.ndarray
    normals: np.ndarray | None = None
    source: str = "<array>"

    def __len__(self) -> int:
        return len(self.points)

    @property
    def diagonal(self) -> float:
        """Length of the axis-aligned bounding-box diagonal."""
        return float(np.linalg.norm(self.points.max(0) - self.points.min(0)))


def validate_cloud(points: np.ndarray, normals: np.ndarray | None = None, source: str = "<array>") -> Cloud:
    """Check a cloud and return it as a :class:`Cloud` (float64, contiguous).

    Raises ``ValueError`` with a message naming ``source`` for: a wrong shape, no points,
    NaN/Inf coordinates, a single point, or all points identical (no surface to fit).
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"{source}: expected an (N, 3) array of point coordinates, got shape {pts.shape}")
    if len(pts) == 0:
        raise ValueError(f"{source}: the point cloud is empty (0 points)")
    pts = pts.astype(np.float64, copy=False)
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{source}: {int(bad.sum())} point(s) have NaN or Inf coordinates (first at index {first}: "
            f"{pts[first].tolist()}); remove them before reconstruction"
        )
    if len(pts) == 1:
        raise ValueError(f"{source}: the point cloud has only one point; a surface needs at least 4 distinct points")
    if np.all(pts == pts[0]):
        raise ValueError(f"{source}: all {len(pts)} points are identical ({pts[0].tolist()}); "
                         "there is no surface to fit")
    nrm = None
    if normals is not None:
        nrm = np.asarray(normals, dtype=np.float64)
        if nrm.shape != pts.shape:
            raise ValueError(f"{source}: normals have shape {nrm.shape}, expected {pts.shape}")
        length = np.linalg.norm(nrm, axis=1)
        if not np.isfinite(nrm).all() or np.any(length == 0):
            # Unusable normals are dropped rather than guessed; positions are still fine.
            nrm = None
        else:
            nrm = nrm / length[:, None]
    return Cloud(np.ascontiguousarray(pts), None if nrm is None else np.ascontiguousarray(nrm), source)


def _load_ply(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The vertices of a PLY, checked against its header (:mod:`geoprior.ply`)."""
    from geoprior.ply import read_vertices

    return read_vertices(path)


def _load_text(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with open(path) as fh:
            lines = [ln.split() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text point file (expected lines 'x y z [nx ny nz]')") from None
    if lines and len(lines[0]) == 1:  # .pts files may start with the point count
        lines = lines[1:]
    if not lines:
        return np.empty((0, 3)), None
    ncol = min(len(w) for w in lines)
    if ncol < 3:
        raise ValueError(f"{path}: each line needs at least 3 numbers (x y z), found a line with {ncol}")
    try:
        data = np.array([w[:ncol] for w in lines], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: could not read numbers ({exc})") from None
    normals = data[:, 3:6] if ncol == 6 and path.suffix.lower() in (".xyz", ".xyzn", ".txt") else None
    return data[:, :3], normals


def _load_npy(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable .npy array ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] not in (3, 6):
        raise ValueError(f"{path}: expected an (N, 3) or (N, 6) array (positions [+ normals]), got shape {arr.shape}")
    return arr[:, :3], (arr[:, 3:6] if arr.shape[1] == 6 else None)


def _load_mesh_vertices(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import trimesh

    try:
        geom = trimesh.load(path, process=False, force="mesh")
    except Exception as exc:
        raise ValueError(f"{path}: could not read the file ({type(exc).__name__}: {exc})") from None
    verts = np.asarray(geom.vertices, dtype=np.float64)
    normals = None
    if "vertex_normals" in geom._cache or (hasattr(geom, "faces") and len(geom.faces)):
        normals = np.asarray(geom.vertex_normals, dtype=np.float64) if len(verts) else None
    return verts, normals


def load_cloud(path: str | Path) -> Cloud:
    """Read one point cloud (PLY, OBJ/OFF/STL vertices, XYZ/PTS text, NPY) or a ``.conf`` scan set."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give a point-cloud file or a .conf file")
    suffix = path.suffix.lower()
    if suffix == ".conf":
        return load_conf(path)
    if suffix == ".ply":
        pts, nrm = _load_ply(path)
    elif suffix in (".obj", ".off", ".stl"):
        pts, nrm = _load_mesh_vertices(path)
    elif suffix in (".xyz", ".xyzn", ".pts", ".txt"):
        pts, nrm = _load_text(path)
    elif suffix == ".npy":
        pts, nrm = _load_npy(path)
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(CLOUD_SUFFIXES)}")
    return validate_cloud(pts, nrm, str(path))


def load_clouds(paths: list[str | Path]) -> Cloud:
    """Read several clouds (already in one frame) and concatenate them."""
    if not paths:
        raise ValueError("no input file given")
    clouds = [load_cloud(p) for p in paths]
    if len(clouds) == 1:
        return clouds[0]
    pts = np.concatenate([c.points for c in clouds])
    nrm = np.concatenate([c.normals for c in clouds]) if all(c.normals is not None for c in clouds) else None
    return validate_cloud(pts, nrm, " + ".join(c.source for c in clouds))


def quaternion_to_matrix(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """Rotation matrix of the quaternion ``qw + qx i + qy j + qz k`` (Hamilton; normalised first)."""
    q = np.array([qw, qx, qy, qz], dtype=np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError(f"quaternion ({qx}, {qy}, {qz}, {qw}) has zero or non-finite length")
    w, x, y, z = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def load_conf(path: str | Path) -> Cloud:
    """Merge the range scans of a Stanford ``.conf`` file into one cloud (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such .conf file")
    parts: list[np.ndarray] = []
    normals: list[np.ndarray | None] = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        words = line.split()
        if not words or words[0] != "bmesh":
            continue  # 'camera' and other lines carry no scan
        if len(words) != 9:
            raise ValueError(f"{path}, line {lineno}: expected 'bmesh NAME tx ty tz qx qy qz qw', got {line.strip()!r}")
        try:
            tx, ty, tz, qx, qy, qz, qw = map(float, words[2:])
        except ValueError:
            pose = " ".join(words[2:])
            raise ValueError(f"{path}, line {lineno}: the pose must be 7 numbers, got {pose!r}") from None
        try:
            rot = quaternion_to_matrix(qx, qy, qz, qw)
        except ValueError as exc:
            raise ValueError(f"{path}, line {lineno}: {exc}; the pose needs a rotation (a non-zero quaternion)") \
                from None
        scan_path = path.parent / words[1]
        if not scan_path.exists():
            raise FileNotFoundError(f"{path}, line {lineno}: scan {words[1]!r} not found (looked for {scan_path})")
        scan = load_cloud(scan_path)
        parts.append(scan.points @ rot + np.array([tx, ty, tz]))
        normals.append(None if scan.normals is None else scan.normals @ rot)
    if not parts:
        raise ValueError(f"{path}: no 'bmesh' line found; nothing to merge")
    nrm = np.concatenate(normals) if all(n is not None for n in normals) else None
    return validate_cloud(np.concatenate(parts), nrm, str(path))


def load_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(V, 3)`` and triangles ``(F, 3)`` of a mesh file (PLY, OBJ, OFF, STL)."""
    import trimesh

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such mesh file")
    if path.suffix.lower() == ".ply":
        from geoprior.ply import read_header

        read_header(path)  # a clear error for what is not a PLY
    try:
        mesh = trimesh.load(path, process=False, force="mesh")
    except Exception as exc:
        raise ValueError(f"{path}: could not read the mesh ({type(exc).__name__}: {exc})") from None
    faces = np.asarray(getattr(mesh, "faces", np.empty((0, 3))), dtype=np.int64)
    if len(faces) == 0:
        raise ValueError(f"{path}: the file has no triangles; a reference mesh is needed")
    return np.asarray(mesh.vertices, dtype=np.float64), faces


def write_cloud_ply(path: str | Path, points: np.ndarray, normals: np.ndarray | None = None) -> Path:
    """Write a binary PLY point cloud (x, y, z as float32, or float64 where float32 would move a
    point by more than 1e-6 of the diagonal; optionally float32 nx, ny, nz)."""
    from geoprior.ply import write_ply

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_ply(path, points, normals)


def write_mesh_ply(path: str | Path, vertices: np.ndarray, faces: np.ndarray,
                   normals: np.ndarray | None = None) -> Path:
    """Write a binary PLY triangle mesh (vertices, optional vertex normals, triangles)."""
    from geoprior.ply import write_ply

    path = Path(path)
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3) triangles, got shape {faces.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_ply(path, vertices, normals, faces)
