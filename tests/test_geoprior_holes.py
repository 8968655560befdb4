"""Hole fills of a trimmed Poisson surface: which unsupported sheets are kept."""
import numpy as np
import pytest

from geoprior.holes import fill_components, fill_deviation, keep_hole_fills
from geoprior.mesh import mean_spacing, poisson_mesh


def _sphere(n: int, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def test_fill_components_labels_connected_unsupported_vertices():
    # A strip of 4 triangles over 6 vertices; vertices 0, 1 and 5 unsupported: 0-1 joined, 5 alone.
    faces = np.array([[0, 1, 2], [1, 3, 2], [2, 3, 4], [3, 5, 4]])
    unsupported = np.array([True, True, False, False, False, True])
    labels = fill_components(faces, unsupported)
    assert labels[2] == labels[3] == labels[4] == -1
    assert labels[0] == labels[1] != labels[5]
    assert sorted(set(labels[unsupported])) == [0, 1]


def test_fill_deviation_is_small_for_a_cap_of_the_sphere_and_large_for_a_bulge():
    from scipy.spatial import cKDTree

    pts = _sphere(20_000)
    data = pts[pts[:, 2] < 0.8]                              # a hole of radius 0.6 around the north pole
    tree = cKDTree(data)
    rim = _sphere(2000, seed=1)
    rim = rim[np.abs(rim[:, 2] - 0.8) < 0.01]
    cap = pts[pts[:, 2] > 0.85]
    rho, dev = fill_deviation(np.concatenate([cap, rim]), np.arange(len(cap)),
                              np.arange(len(cap), len(cap) + len(rim)), data, tree)
    assert rho == pytest.approx(0.6, rel=0.05)
    assert dev < 0.1                                         # the threshold a kept fill must meet
    bulge = cap.copy()
    bulge[:, 2] += 0.3                                       # the same cap pushed off the sphere
    _, dev_bulge = fill_deviation(np.concatenate([bulge, rim]), np.arange(len(cap)),
                                  np.arange(len(cap), len(cap) + len(rim)), data, tree)
    assert dev_bulge > 0.3


def test_poisson_keeps_the_fill_of_a_hole_in_a_sphere():
    pts = _sphere(6000)
    data = pts[pts[:, 2] < 0.85]                             # an unseen cap
    normals = data.copy()
    trim = 3 * mean_spacing(data)
    V, F = poisson_mesh(data, normals, depth=6, trim_quantile=0.0, trim_distance=trim, threads=1)
    Vf, Ff = poisson_mesh(data, normals, depth=6, trim_quantile=0.0, trim_distance=trim, threads=1,
                          fill_holes=True)
    assert V[:, 2].max() < 0.9                               # the trim removes the cap ...
    assert Vf[:, 2].max() > 0.97                             # ... the hole fill keeps it
    cap = Vf[Vf[:, 2] > 0.85]                                # the fill lies on the sphere, to depth-6 accuracy
    assert np.abs(np.linalg.norm(cap, axis=1) - 1).mean() < 0.05


def test_poisson_drops_the_lid_that_closes_an_open_sheet():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-1, 1, size=(4000, 2))
    data = np.column_stack([xy, 0.1 * np.sin(2 * xy[:, 0])])
    normals = np.tile([0.0, 0.0, 1.0], (len(data), 1))
    trim = 3 * mean_spacing(data)
    V, F = poisson_mesh(data, normals, depth=6, trim_quantile=0.0, trim_distance=trim, threads=1,
                        fill_holes=True)
    from scipy.spatial import cKDTree

    # Nothing of the closing sheet survives: every vertex stays within the trim distance of the data.
    assert cKDTree(data).query(V)[0].max() <= trim + 1e-9


def test_keep_hole_fills_without_unsupported_vertices_keeps_nothing():
    faces = np.array([[0, 1, 2]])
    verts = np.eye(3)
    assert not keep_hole_fills(verts, faces, verts, np.zeros(3, dtype=bool)).any()
