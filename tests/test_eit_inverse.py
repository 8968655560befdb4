"""Neural and classical reconstructions of a simulated phantom; CLI input errors."""
import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def phantom_problem():
    from eit.cli import simulated_problem

    return simulated_problem("two-inclusion", "1500", noise=0.01, seed=0)


def test_problem_is_not_an_inverse_crime(phantom_problem):
    p = phantom_problem
    assert p.info["fine_cells"] > 1.5 * p.n_cells
    assert p.truth.shape == (256, 256) and set(np.unique(p.truth)) == {0, 1, 2}
    assert abs(p.sigma_bg - 1.0) < 0.1  # the background fitted from the simulated reference


def test_neural_improves_on_homogeneous(phantom_problem):
    from eit.reconstruct import neural
    from eit.result import finish

    p = phantom_problem
    homogeneous = finish(p, np.full(p.n_cells, p.sigma_bg), "homogeneous", 0.0)
    rec = neural(p, prior="mlp", iterations=60, lr=5e-3, tv_weight=1e-2)
    assert np.all(rec.sigma > 0) and np.all(np.isfinite(rec.sigma))
    assert rec.metrics["chi2"] < 0.5 * homogeneous.metrics["chi2"]
    assert rec.metrics["rel_l2"] < homogeneous.metrics["rel_l2"]
    assert rec.metrics["score"] > homogeneous.metrics["score"] + 0.2
    # Both inclusion types are found.
    assert set(np.unique(rec.segmentation)) == {0, 1, 2}


def test_conv_prior_runs_and_is_positive(phantom_problem):
    from eit.conductivity import GridConductivity

    p = phantom_problem
    net = GridConductivity(p.sigma_bg, p.radius, p.centroids, size=32, k=8, layers=3)
    sigma = net(net.z0)
    assert sigma.shape == (p.n_cells,) and sigma.dtype == torch.float64
    np.testing.assert_allclose(sigma.detach().numpy(), p.sigma_bg)  # starts at the background
    with torch.no_grad():
        net.decoder.net[-1].weight.normal_(0, 100.0)
    s = net(net.z0)
    assert bool((s > 0).all()) and bool(torch.isfinite(s).all())


def test_baselines_improve_misfit(phantom_problem):
    from eit.baselines import gauss_newton, onestep

    p = phantom_problem
    chi0 = p.chi2(np.full(p.n_cells, p.sigma_bg))
    one = onestep(p)
    assert one.metrics["score"] > 0.1
    gn = gauss_newton(p, "tv", iterations=2)
    assert gn.metrics["chi2"] < chi0


def test_non_positive_conductivity_rejected(phantom_problem):
    p = phantom_problem
    sigma = np.full(p.n_cells, p.sigma_bg)
    sigma[5] = -1.0
    with pytest.raises(ValueError, match="positive"):
        p.model.forward(sigma)
    from eit.conductivity import MLPConductivity

    with pytest.raises(ValueError, match="positive"):
        MLPConductivity(0.0, 0.115)


def test_cli_missing_ref(tmp_path, capsys):
    from shared.cli import main

    rc = main(["eit", "reconstruct", "--ktc", str(tmp_path), "--target", "1", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "has no ref.mat" in capsys.readouterr().err


def test_cli_phantom_writes_outputs(tmp_path):
    from shared.cli import main

    out = tmp_path / "o"
    rc = main(["eit", "reconstruct", "--phantom", "two-inclusion", "--method", "neural", "--iterations", "5",
               "--out", str(out), "--quiet"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert "score" in m["methods"]["neural-mlp"] and "rel_l2" in m["methods"]["neural-mlp"]
    for f in ("comparison.png", "sigma_neural-mlp.png", "sigma_neural-mlp.xdmf", "sigma_neural-mlp.h5"):
        assert (out / f).stat().st_size > 0
