"""``untrained geoprior reconstruct``: outputs on a tiny sphere, clear errors on bad inputs."""
import json

import numpy as np
import pytest

from geoprior import DeepGeometricPrior
from geoprior.shapes import sphere
from shared.cli import main


def _sphere_file(path, n=500, seed=0):
    p = sphere(n, seed)
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
    assert report["config"]["hidden"] == [16, 16] and report["config"]["iterations"] == 40
    assert report["inputs"] == [str(src)] and report["timings"]["reconstruct_s"] > 0


def test_cli_stop_rule_and_no_mesh(tmp_path, capsys):
    src = _sphere_file(tmp_path / "s.xyz", n=300)
    out = tmp_path / "out"
    rc = main(["geoprior", "reconstruct", str(src), "--out", str(out), "--radius", "0.3", "--iterations", "30",
               "--stop", "eswmv", "--stopping-window", "5", "--stopping-patience", "5", "--hidden", "8",
               "--consistency-iterations", "0", "--no-mesh"])
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["config"]["stopping"] == "eswmv" and report["config"]["mesh"] is False
    assert report["stopped_by"] in ("stopping", "iterations") and not (out / "mesh.ply").exists()
    said = capsys.readouterr().out
    assert "reconstructed 300 points" in said and f"wrote {out / 'metrics.json'}" in said


def test_cli_options_are_the_reconstructors_settings(capsys):
    """Every setting of DeepGeometricPrior is an option with the library's default; no raw reST in --help."""
    assert main(["geoprior", "reconstruct", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--radius", "--overlap", "--iterations", "--consistency-iterations", "--lr", "--hidden", "--loss",
                 "--stop", "--fold-points", "--max-folds", "--centres", "--density", "--depth", "--trim",
                 "--isolated", "--no-mesh", "--rematch-every", "--blur"):
        assert flag in text, flag
    assert "``" not in text and ":mod:" not in text and ":class:" not in text
    assert "covering radius r as a fraction of the bbox diagonal (None: chosen so that a median patch holds" \
        in " ".join(text.split())
    assert "--patch-points" in text and "--discrepancy-fraction" in text
    from shared.cli import build_parser

    args = build_parser().parse_args(["geoprior", "reconstruct", "x.xyz"])
    defaults = DeepGeometricPrior().get_params()
    for name, value in defaults.items():
        if name != "progress":
            got = getattr(args, name)
            assert (tuple(got) if isinstance(value, tuple) else got) == value, name


def test_cli_bad_option_is_refused_before_anything_is_created(tmp_path, capsys):
    src = _sphere_file(tmp_path / "s.xyz", n=100)
    rc = main(["geoprior", "reconstruct", str(src), "--out", str(tmp_path / "o"), "--radius", "1.5", "--quiet"])
    assert rc == 2
    assert "--radius" in capsys.readouterr().err and not (tmp_path / "o").exists()


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
