"""A strict PLY reader and writer for point clouds and triangle meshes.

The header says what the body must hold: elements (``vertex``, ``face``, ...) in order,
each with a count and typed properties (scalars, or lists with a count type).  This
reader checks the body against it instead of trusting a library that fills a short file
with whatever memory held:

* binary (little or big endian): the vertex element's rows have a fixed size, so the
  file must hold ``count x row`` bytes after the elements before it; a shorter file is
  refused with the byte offset where the data ends;
* ASCII: every vertex row must hold one number per property; a missing row, a short
  row or a word that is not a number is refused with its line number.

Non-finite coordinates are left in the array for :func:`geoprior.io.validate_cloud` to
report by line.  :func:`write_ply` writes binary little-endian PLY with ``float``
coordinates, or ``double`` when float32 would move a point by more than ``1e-6`` of
the cloud's bounding-box diagonal (georeferenced coordinates such as 5e6 m).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = ["PlyHeader", "read_header", "read_vertices", "write_ply", "coordinate_dtype"]

TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


@dataclass
class Element:
    name: str
    count: int
    properties: list[tuple[str, str, str | None]] = field(default_factory=list)  # (name, type, list count type)

    @property
    def fixed_size(self) -> bool:
        return all(count is None for _, _, count in self.properties)


@dataclass
class PlyHeader:
    format: str          # "ascii", "binary_little_endian" or "binary_big_endian"
    elements: list[Element]
    body_offset: int     # byte offset of the first byte after "end_header\n"

    def element(self, name: str) -> Element | None:
        return next((e for e in self.elements if e.name == name), None)


def read_header(path: Path) -> PlyHeader:
    """Parse a PLY header; a ``ValueError`` naming the file when it is not a valid one."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    if not head.startswith(b"ply"):
        raise ValueError(f"{path}: not a PLY file (it does not start with 'ply')")
    end = head.find(b"end_header")
    if end < 0:
        raise ValueError(f"{path}: malformed PLY header (no 'end_header' line in its first 64 KiB)")
    newline = head.find(b"\n", end)
    body_offset = newline + 1 if newline >= 0 else len(head)
    fmt, elements = "", []
    for lineno, line in enumerate(head[:end].decode("latin-1").splitlines(), start=1):
        words = line.split()
        if not words or words[0] in ("ply", "comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(Element(words[1], int(words[2])))
        elif words[0] == "property" and elements:
            elements[-1].properties.append(_property(path, lineno, words))
        else:
            raise ValueError(f"{path}, header line {lineno}: cannot read {line.strip()!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: malformed PLY header (format {fmt or 'missing'!r}; expected ascii, "
                         "binary_little_endian or binary_big_endian)")
    return PlyHeader(fmt, elements, body_offset)


def _property(path: Path, lineno: int, words: list[str]) -> tuple[str, str, str | None]:
    if len(words) == 5 and words[1] == "list" and words[2] in TYPES and words[3] in TYPES:
        return words[4], TYPES[words[3]], TYPES[words[2]]
    if len(words) == 3 and words[1] in TYPES:
        return words[2], TYPES[words[1]], None
    raise ValueError(f"{path}, header line {lineno}: unknown property {' '.join(words)!r}")


def read_vertices(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions ``(N, 3)`` and normals ``(N, 3)`` (or None) of a PLY's vertex element, checked.

    Raises ``ValueError`` for a header without ``x, y, z``, a vertex element that comes
    after a variable-size element in a binary file (not written by any common tool), and a
    body that is shorter than the header declares (module docstring).
    """
    path = Path(path)
    header = read_header(path)
    vertex = header.element("vertex")
    if vertex is None or not {"x", "y", "z"} <= {p for p, _, _ in vertex.properties}:
        raise ValueError(f"{path}: PLY has no vertex element with x, y, z properties")
    if not vertex.fixed_size:
        raise ValueError(f"{path}: vertex properties that are lists are not supported")
    read = _ascii_vertices if header.format == "ascii" else _binary_vertices
    table = read(path, header, vertex)
    names = [p for p, _, _ in vertex.properties]
    points = np.stack([table[:, names.index(k)] for k in "xyz"], axis=1)
    normals = (np.stack([table[:, names.index(k)] for k in ("nx", "ny", "nz")], axis=1)
               if {"nx", "ny", "nz"} <= set(names) else None)
    return points, normals


def _binary_vertices(path: Path, header: PlyHeader, vertex: Element) -> np.ndarray:
    order = "<" if header.format == "binary_little_endian" else ">"
    offset = header.body_offset
    for element in header.elements:
        if element is vertex:
            break
        if not element.fixed_size:
            raise ValueError(f"{path}: the vertex element follows the variable-size element {element.name!r}")
        offset += element.count * sum(np.dtype(t).itemsize for _, t, _ in element.properties)
    dtype = np.dtype([(name, order + t) for name, t, _ in vertex.properties])
    need = vertex.count * dtype.itemsize
    size = path.stat().st_size
    if size < offset + need:
        have = max(size - offset, 0) // dtype.itemsize
        raise ValueError(f"{path}: truncated PLY: the header declares {vertex.count} vertices ({need} bytes from "
                         f"byte {offset}), but the file ends at byte {size}, after {have} complete vertices")
    with open(path, "rb") as fh:
        fh.seek(offset)
        rows = np.frombuffer(fh.read(need), dtype=dtype, count=vertex.count)
    return np.stack([rows[name].astype(np.float64) for name in dtype.names], axis=1) if vertex.count else \
        np.empty((0, len(dtype.names)))


def _ascii_vertices(path: Path, header: PlyHeader, vertex: Element) -> np.ndarray:
    with open(path, "rb") as fh:
        fh.seek(header.body_offset)
        lines = fh.read().decode("latin-1").splitlines()
    first_line = header.body_offset and 1 + sum(1 for _ in open(path, "rb").read(header.body_offset).splitlines())
    skip = 0
    for element in header.elements:  # rows of the elements before the vertices
        if element is vertex:
            break
        skip += element.count
    rows = [ln for ln in lines[skip:] if ln.strip()][: vertex.count]
    if len(rows) < vertex.count:
        raise ValueError(f"{path}: truncated PLY: the header declares {vertex.count} vertices but the body has "
                         f"{len(rows)} vertex rows")
    ncol = len(vertex.properties)
    table = np.empty((vertex.count, ncol))
    for i, row in enumerate(rows):
        words = row.split()
        if len(words) != ncol:
            raise ValueError(f"{path}, line {first_line + skip + i}: expected {ncol} numbers per vertex "
                             f"({', '.join(p for p, _, _ in vertex.properties)}), found {len(words)}")
        try:
            table[i] = [float(w) for w in words]
        except ValueError:
            raise ValueError(f"{path}, line {first_line + skip + i}: not a number in {row.strip()!r}") from None
    return table


def coordinate_dtype(points: np.ndarray, tolerance: float = 1e-6) -> str:
    """``"f4"`` when float32 keeps every coordinate within ``tolerance`` x the bounding-box diagonal, else ``"f8"``."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) == 0:
        return "f4"
    diag = float(np.linalg.norm(pts.max(0) - pts.min(0))) or 1.0
    err = float(np.abs(pts.astype(np.float32).astype(np.float64) - pts).max())
    return "f4" if err <= tolerance * diag else "f8"


def write_ply(path: str | Path, points: np.ndarray, normals: np.ndarray | None = None,
              faces: np.ndarray | None = None, colors: np.ndarray | None = None,
              scalars: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write a binary little-endian PLY: vertices (float or double positions, float normals,
    uchar colours, float scalar fields) and optionally triangles.

    ``scalars`` maps a property name to one value per vertex ``(N,)``, written as a ``float``
    vertex property after the others (a scalar field, read by name by readers that keep extra
    vertex properties, e.g. ``open3d.t.io.read_point_cloud``).
    """
    path = Path(path)
    pts = np.asarray(points, dtype=np.float64)
    kind = coordinate_dtype(pts)
    fields = [(k, "<" + kind) for k in "xyz"]
    if normals is not None:
        fields += [(k, "<f4") for k in ("nx", "ny", "nz")]
    if colors is not None:
        fields += [(k, "u1") for k in ("red", "green", "blue")]
    scalars = dict(scalars or {})
    for name, values in scalars.items():
        if not name.isidentifier() or name in {f for f, _ in fields}:
            raise ValueError(f"scalar field name {name!r} must be a new identifier-like property name")
        if np.shape(values) != (len(pts),):
            raise ValueError(f"scalar field {name!r} has shape {np.shape(values)}, expected ({len(pts)},)")
        fields.append((name, "<f4"))
    vertex = np.empty(len(pts), dtype=fields)
    for name, values in scalars.items():
        vertex[name] = np.asarray(values, dtype=np.float64)
    for i, k in enumerate("xyz"):
        vertex[k] = pts[:, i]
        if normals is not None:
            vertex["n" + k] = np.asarray(normals)[:, i]
        if colors is not None:
            vertex[("red", "green", "blue")[i]] = np.asarray(colors)[:, i]
    names = {"f4": "float", "f8": "double", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", "comment written by untrained.geoprior",
              f"element vertex {len(vertex)}"]
    header += [f"property {names[vertex.dtype[n].str[1:]]} {n}" for n in vertex.dtype.names]
    if faces is not None:
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    header.append("end_header")
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(vertex.tobytes())
        if faces is not None:
            rec = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
            rec["n"] = 3
            rec["v"] = faces
            fh.write(rec.tobytes())
    return path
