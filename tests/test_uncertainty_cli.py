"""The `--uncertainty` flags of the front ends: image ct, geoprior and eit write std maps and calibration reports."""
import json

import numpy as np
import pytest
from skimage.io import imsave

from shared.cli import main
from shared.image.phantoms import shepp_logan


def test_image_ct_uncertainty_flag(tmp_path):
    src = tmp_path / "phantom.png"
    imsave(src, (shepp_logan(32)[0, 0].numpy() * 255).astype(np.uint8))
    out = tmp_path / "out"
    rc = main(["image", "ct", str(src), "--size", "32", "--angles", "10", "--iterations", "5", "--stop", "none",
               "--uncertainty", "--uncertainty-rank", "4", "--out", str(out), "--quiet"])
    assert rc == 0
    rep = json.loads((out / "uncertainty.json").read_text())
    assert rep["uncertainty"]["rank"] == 4 and rep["noise_std_given"] > 0
    assert 0 <= rep["calibration"]["fraction_within"] <= 1
    assert (out / "std.png").stat().st_size > 0 and (out / "std.pt").exists()
    assert main(["image", "ct", str(src), "--size", "32", "--iterations", "2", "--uncertainty",
                 "--uncertainty-rank", "0", "--out", str(out), "--quiet"]) == 2
    # An ensemble: each member linearised at its own weights, their posteriors mixed.
    rc = main(["image", "ct", str(src), "--size", "32", "--angles", "10", "--iterations", "5", "--stop", "none",
               "--members", "2", "--uncertainty", "--uncertainty-rank", "4", "--out", str(tmp_path / "ens"), "--quiet"])
    assert rc == 0
    rep = json.loads((tmp_path / "ens" / "uncertainty.json").read_text())
    assert [u["rank"] for u in rep["uncertainty"]["members"]] == [4, 4] and rep["metrics"]["members"] == 2
    assert 0 <= rep["calibration"]["fraction_within"] <= 1


def test_a_mixture_of_member_posteriors_holds_each_members_variance_and_their_spread():
    import torch

    from shared.image import DeepImagePrior, ct_problem, image_uncertainty
    from shared.uncertainty import linearised_uncertainty, member_fits

    problem = ct_problem(shepp_logan(32), multiple=16, angles=10, size=32, noise=0.01, seed=0)
    result = DeepImagePrior(net="skip", iterations=5, stop="none", members=2).reconstruct(problem)
    fits = member_fits(result.fit, keep_dim=True)
    assert len(fits) == 2 and fits[0].z.shape[1] == result.fit.z.shape[1] // 2
    for k, f in enumerate(fits):  # a member on its own input gives its row of the ensemble's output
        with torch.no_grad():
            assert torch.allclose(f.model.eval()(f.z), result.fit.model.eval()(result.fit.z)[k:k + 1], atol=1e-5)
    parts = [linearised_uncertainty(f, rank=4, beta=1e4) for f in fits]
    unc = image_uncertainty(result, problem, noise_std=1e-2, rank=4)
    means = torch.stack([u.mean.clamp(0, 1) for u in parts])
    var = torch.stack([u.std ** 2 for u in parts]).mean(0) + means.var(0, unbiased=False)
    assert torch.allclose(unc.arrays["std"] ** 2, var.float(), rtol=1e-4, atol=1e-9)


def _ply_vertex_property(path, name):
    """One float vertex property of a binary little-endian PLY, read by its header (no library)."""
    from geoprior.ply import read_header

    header = read_header(path)
    vertex = header.element("vertex")
    dtype = np.dtype([(p, "<" + t) for p, t, _ in vertex.properties])
    with open(path, "rb") as fh:
        fh.seek(header.body_offset)
        rows = np.frombuffer(fh.read(vertex.count * dtype.itemsize), dtype=dtype, count=vertex.count)
    return rows[name].astype(np.float64)


def test_geoprior_uncertainty_flag_writes_a_std_field_and_its_calibration(tmp_path, capsys):
    import trimesh

    from geoprior.io import write_mesh_ply
    from geoprior.ply import read_vertices
    from geoprior.shapes import sphere

    p = sphere(500, 0)
    np.savetxt(tmp_path / "s.xyz", p + 0.01 * np.random.default_rng(1).normal(size=p.shape))
    ico = trimesh.creation.icosphere(subdivisions=4)
    write_mesh_ply(tmp_path / "ref.ply", np.asarray(ico.vertices), np.asarray(ico.faces))
    out = tmp_path / "out"
    rc = main(["geoprior", "reconstruct", str(tmp_path / "s.xyz"), "--reference", str(tmp_path / "ref.ply"),
               "--out", str(out), "--radius", "0.15", "--iterations", "40", "--consistency-iterations", "10",
               "--hidden", "16", "16", "--no-mesh", "--uncertainty"])
    assert rc == 0
    dense, _ = read_vertices(out / "dense.ply")
    std = _ply_vertex_property(out / "dense_std.ply", "std")
    assert std.shape == (len(dense),) and np.isfinite(std).all() and (std > 0).all()
    assert np.allclose(read_vertices(out / "dense_std.ply")[0], dense)  # the same cloud, in the same order
    assert (out / "std.png").stat().st_size > 0
    rep = json.loads((out / "uncertainty.json").read_text())
    m = rep["metrics"]
    assert m["n_points"] == len(dense) and m["n_charts"] == json.loads((out / "metrics.json").read_text())["n_patches"]
    assert m["mean_std"] == pytest.approx(std.mean(), rel=1e-5) and m["noise_std"]["median"] > 0
    cal = m["calibration"]
    for key in ("within_1std", "within_2std"):
        assert 0 <= cal[key] <= 1, key
    assert cal["within_1std"] <= cal["within_2std"] and -1 <= cal["std_error_correlation"] <= 1
    said = capsys.readouterr().out
    assert "of the dense points within 1 / 2 std" in said and "uncertainty.json" in said


def test_eit_uncertainty_flag_writes_std_maps_and_a_calibration_report(tmp_path):
    out = tmp_path / "u"
    rc = main(["eit", "reconstruct", "--phantom", "two-inclusion", "--level", "7", "--iterations", "5",
               "--members", "1", "--uncertainty", "--uncertainty-rank", "8", "--out", str(out), "--quiet"])
    assert rc == 0
    for name in ("std_neural-mlp.png", "std_neural-mlp.xdmf", "std_neural-mlp.h5", "uncertainty.json"):
        assert (out / name).stat().st_size > 0, name
    rep = json.loads((out / "uncertainty.json").read_text())["methods"]["neural-mlp"]
    assert rep["members"] == 1 and rep["mean_std"] > 0 and rep["alpha"] > 0
    assert rep["level_std"] > 0 and rep["mean_std"] > rep["mean_std_network"]  # the water level's share
    cal = rep["calibration"]
    for key in ("within_1std", "within_2std", "within_1std_area", "within_2std_area"):
        assert 0 <= cal[key] <= 1, key
    assert cal["within_1std"] <= cal["within_2std"] and -1 <= cal["std_error_correlation"] <= 1
    assert cal["n"] == json.loads((out / "metrics.json").read_text())["n_cells"]
    # The same report is kept in metrics.json; no network, no uncertainty: a clear error, nothing written.
    assert json.loads((out / "metrics.json").read_text())["uncertainty"]["neural-mlp"]["mean_std"] == rep["mean_std"]
    assert main(["eit", "reconstruct", "--phantom", "two-inclusion", "--method", "onestep", "--uncertainty",
                 "--out", str(tmp_path / "none"), "--quiet"]) == 2
    assert not (tmp_path / "none").exists()
