"""``untrained geoprior reconstruct``: outputs on a tiny sphere, clear errors on bad inputs."""
import json

import numpy as np
import pytest

from shared.cli import main


def _sphere_file(path, n=500, seed=0):
    p = np.random.default_rng(seed).normal(size=(n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    np.savetxt(path, p + 0.01 * np.random.default_rng(1).normal(size=p.shape))
    return path


def test_cli_writes_outputs(tmp_path):
    src = _sphere_file(tmp_path / "s.xyz")
    out = tmp_path / "out"
    rc = main(["geoprior", "reconstruct", str(src), "--out", str(out), "--radius", "0.15", "--iterations", "40",
               "--consistency-iterations", "10", "--hidden", "16", "16", "--depth", "5", "--quiet"])
    assert rc == 0
    for name in ("dense.ply", "mesh.ply", "input_vs_output.png", "metrics.json"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "metrics.json").read_text())
    assert report["n_input"] == 500 and report["n_patches"] > 1


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("0 0 0\nnan 0 0\n1 1 1\n", "NaN or Inf"),
    ("1 2 3\n", "only one point"),
    ("1 1 1\n1 1 1\n1 1 1\n", "identical"),
])
def test_cli_bad_inputs(tmp_path, capsys, content, message):
    src = tmp_path / "bad.xyz"
    src.write_text(content)
    rc = main(["geoprior", "reconstruct", str(src), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "bad.xyz" in err


def test_cli_missing_scan_in_conf(tmp_path, capsys):
    (tmp_path / "scans.conf").write_text("bmesh gone.ply 0 0 0 0 0 0 1\n")
    rc = main(["geoprior", "reconstruct", str(tmp_path / "scans.conf"), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    assert "scan 'gone.ply' not found" in capsys.readouterr().err


def test_cli_refuses_to_overwrite_input(tmp_path, capsys):
    from geoprior.io import write_cloud_ply

    p = np.random.default_rng(0).normal(size=(100, 3))
    write_cloud_ply(tmp_path / "dense.ply", p)
    rc = main(["geoprior", "reconstruct", str(tmp_path / "dense.ply"), "--out", str(tmp_path), "--quiet"])
    assert rc == 2
    assert "overwrite the input" in capsys.readouterr().err
