"""geoprior.io: readers, writers, .conf merging and bad inputs rejected with clear messages."""
import numpy as np
import pytest

from geoprior.io import (load_cloud, load_conf, load_mesh, quaternion_to_matrix, validate_cloud, write_cloud_ply,
                         write_mesh_ply)
from geoprior.shapes import sphere


def _sphere(n=200, seed=0):
    return sphere(n, seed)


@pytest.mark.parametrize("suffix", [".ply", ".xyz", ".npy", ".pts"])
def test_roundtrip_formats(tmp_path, suffix):
    p = _sphere()
    path = tmp_path / f"c{suffix}"
    if suffix == ".ply":
        write_cloud_ply(path, p, p)
    elif suffix == ".xyz":
        np.savetxt(path, np.hstack([p, p]))
    elif suffix == ".npy":
        np.save(path, np.hstack([p, p]))
    else:
        path.write_text(f"{len(p)}\n" + "\n".join(" ".join(map(str, r)) + " 7" for r in p))
    c = load_cloud(path)
    assert np.allclose(c.points, p, atol=1e-6)
    if suffix != ".pts":
        assert c.normals is not None and np.allclose(c.normals, p, atol=1e-6)


def test_obj_and_mesh_ply(tmp_path):
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=2)
    m.export(tmp_path / "s.obj")
    c = load_cloud(tmp_path / "s.obj")
    assert c.points.shape == m.vertices.shape
    write_mesh_ply(tmp_path / "m.ply", m.vertices, m.faces)
    v, f = load_mesh(tmp_path / "m.ply")
    assert np.allclose(v, m.vertices, atol=1e-6) and (f == m.faces).all()


def test_quaternion_is_hamilton_rotation():
    # 90 degrees about z: (qx, qy, qz, qw) = (0, 0, sin 45, cos 45) maps x to y.
    R = quaternion_to_matrix(0, 0, np.sqrt(0.5), np.sqrt(0.5))
    assert np.allclose(R @ [1, 0, 0], [0, 1, 0])
    assert np.allclose(R.T @ R, np.eye(3))


def test_conf_merge_convention(tmp_path):
    p = _sphere(50)
    write_cloud_ply(tmp_path / "a.ply", p)
    R = quaternion_to_matrix(0.1, 0.2, 0.3, 0.9)
    (tmp_path / "s.conf").write_text("camera 0 0 0 0 0 0 1\nbmesh a.ply 1 2 3 0.1 0.2 0.3 0.9\n")
    c = load_conf(tmp_path / "s.conf")
    assert np.allclose(c.points, p @ R + [1, 2, 3], atol=1e-6)


@pytest.mark.parametrize("points, message", [
    (np.empty((0, 3)), "empty"),
    (np.array([[0.0, 0, 0], [np.nan, 0, 0], [1, 1, 1]]), "NaN or Inf"),
    (np.array([[0.0, 0, 0], [np.inf, 0, 0]]), "NaN or Inf"),
    (np.array([[1.0, 2, 3]]), "only one point"),
    (np.ones((10, 3)), "identical"),
    (np.ones((10, 2)), "(N, 3)"),
])
def test_bad_arrays_rejected(points, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_cloud(points, source="x.npy")


def test_bad_files_rejected(tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n")  # no end_header
    with pytest.raises(ValueError, match="malformed PLY header"):
        load_cloud(bad)
    trunc = tmp_path / "trunc.ply"
    trunc.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                     "property float z\nend_header\n0 0 0\n1 oops\n")
    with pytest.raises(ValueError, match="trunc.ply"):
        load_cloud(trunc)
    notply = tmp_path / "x.ply"
    notply.write_text("hello")
    with pytest.raises(ValueError, match="not a PLY file"):
        load_cloud(notply)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_cloud(tmp_path / "missing.ply")
    empty = tmp_path / "e.xyz"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_cloud(empty)
    nan = tmp_path / "n.xyz"
    nan.write_text("0 0 0\nnan 1 2\n1 1 1\n")
    with pytest.raises(ValueError, match="NaN or Inf"):
        load_cloud(nan)
    with pytest.raises(ValueError, match="unsupported file type"):
        load_cloud(tmp_path / "s.conf" if False else _touch(tmp_path / "a.vtk"))


def _touch(p):
    p.write_text("x")
    return p


def test_conf_missing_scan(tmp_path):
    (tmp_path / "s.conf").write_text("bmesh nothere.ply 0 0 0 0 0 0 1\n")
    with pytest.raises(FileNotFoundError, match=r"s.conf, line 1: scan 'nothere.ply' not found"):
        load_conf(tmp_path / "s.conf")


@pytest.mark.data
def test_bunny_conf_alignment(shared_data):
    """The checked convention: merged scans lie a median 0.06 mm from bun_zipper.ply."""
    from geoprior.metrics import MeshDistance

    bunny = shared_data / "scans" / "bunny"
    cloud = load_cloud(bunny / "bun.conf")
    assert len(cloud) == 362272
    d = MeshDistance(*load_mesh(bunny / "bun_zipper.ply"))(cloud.points)
    assert 0.04e-3 < np.median(d) < 0.08e-3
