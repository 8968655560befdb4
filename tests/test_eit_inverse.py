"""Neural and classical reconstructions of a simulated phantom; CLI input errors."""
import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def phantom_problem():
    from eit.problem import simulated_problem

    return simulated_problem("two-inclusion", "1500", noise=0.01, seed=0)


def test_problem_is_not_an_inverse_crime(phantom_problem):
    p = phantom_problem
    assert p.info["fine_cells"] > 1.5 * p.n_cells
    assert p.truth.shape == (256, 256) and set(np.unique(p.truth)) == {0, 1, 2}
    assert abs(p.sigma_bg - 1.0) < 0.1  # the background fitted from the simulated reference


def test_neural_improves_on_homogeneous(phantom_problem):
    from shared.fit import FitResult
    from shared.result import Result

    from eit import NeuralEIT
    from eit.result import conductivity_result

    p = phantom_problem
    homogeneous = conductivity_result(p, np.full(p.n_cells, p.sigma_bg), "homogeneous", 0.0)
    rec = NeuralEIT(net="mlp", iterations=60, lr=5e-3, tv_weight=1e-2).reconstruct(p)
    assert isinstance(rec, Result) and isinstance(rec.fit, FitResult) and rec.method == "neural-mlp"
    assert rec.config["iterations"] == 60 and rec.config["lr"] == 5e-3
    sigma = rec.arrays["sigma"]
    assert np.all(sigma > 0) and np.all(np.isfinite(sigma))
    assert rec.metrics["chi2"] < 0.5 * homogeneous.metrics["chi2"]
    assert rec.metrics["rel_l2"] < homogeneous.metrics["rel_l2"]
    assert rec.metrics["score"] > homogeneous.metrics["score"] + 0.2
    # Both inclusion types are found.
    assert set(np.unique(rec.arrays["segmentation"])) == {0, 1, 2}
    assert rec.arrays["image"].shape == (256, 256)
    assert set(rec.files) == {"sigma_neural-mlp.png", "sigma_neural-mlp.xdmf"}


def test_an_ensemble_fits_its_members_together(phantom_problem):
    from eit import NeuralEIT
    from eit.conductivity import MLPConductivity

    p = phantom_problem
    net = MLPConductivity(p.sigma_bg, p.radius, members=3, seed=1)
    x = torch.as_tensor(p.centroids, dtype=torch.float32)
    out = net(x)
    assert out.shape == (3, p.n_cells)
    np.testing.assert_allclose(out.detach().numpy(), p.sigma_bg)  # every member starts from water
    with torch.no_grad():
        net.mlp.weights[-1].normal_()
    s = net.log_contrast(x)
    assert not torch.allclose(s[0], s[1])  # members differ (own features and weights)
    rec = NeuralEIT(iterations=15, members=2).reconstruct(p)
    members = rec.fit.output.detach().numpy()
    assert members.shape == (2, p.n_cells)
    np.testing.assert_allclose(rec.arrays["sigma"], np.exp(np.log(members).mean(0)))
    assert rec.metrics["chi2"] < conductivity_chi2_of_water(p)
    with pytest.raises(ValueError, match="members"):
        NeuralEIT(members=0).validate()
    with pytest.raises(ValueError, match="needs net='mlp'"):
        NeuralEIT(members=2, net="conv").validate()


def test_phase_head_starts_from_water_and_yields_its_phase_values(phantom_problem):
    from eit import NeuralEIT
    from eit.conductivity import MLPConductivity

    p = phantom_problem
    x = torch.as_tensor(p.centroids, dtype=torch.float32)
    net = MLPConductivity(p.sigma_bg, p.radius, members=2, seed=3, head="phase", phase_contrast=5.0)
    np.testing.assert_allclose(net(x).detach().numpy(), p.sigma_bg)  # |v_res| = |v_con|: water
    with torch.no_grad():  # a strongly resistive logit everywhere: the pure resistive phase
        net.mlp.biases[-1][:, :, 1] = 50.0
    v = net.phase_values()
    assert v.shape == (2, 2) and bool((v[:, 0] < 0).all() and (v[:, 1] > 0).all())
    np.testing.assert_allclose(np.log(net(x).detach().numpy() / p.sigma_bg), v[:, :1].numpy().repeat(p.n_cells, 1),
                               rtol=1e-5)
    with torch.no_grad():
        net.mlp.weights[-1].normal_()
        net.phase_log_values[1] += 0.3
    np.testing.assert_allclose(net.member(1)(x).detach().numpy(), net(x)[1].detach().numpy(), rtol=1e-5)
    rec = NeuralEIT(iterations=15, members=1, head="phase", lr=3e-3, phase_lr=0.05,
                    net_options={"phase_contrast": 2.0}).reconstruct(p)
    assert rec.metrics["chi2"] < conductivity_chi2_of_water(p)
    moved = (rec.fit.model.phase_log_values.detach() - np.log(2.0)).abs().max()
    assert moved > 15 * 3e-3  # the values took their own, larger Adam step
    with pytest.raises(ValueError, match="output head"):
        MLPConductivity(p.sigma_bg, p.radius, head="levelset")
    with pytest.raises(ValueError, match="needs net='mlp'"):
        NeuralEIT(net="conv", head="phase").validate()
    with pytest.raises(ValueError, match="phase_lr"):
        NeuralEIT(phase_lr=-1.0).validate()


def conductivity_chi2_of_water(p) -> float:
    return p.chi2(np.full(p.n_cells, p.sigma_bg))


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
    from eit import GaussNewton, OneStep, make_reconstructor

    p = phantom_problem
    chi0 = p.chi2(np.full(p.n_cells, p.sigma_bg))
    one = OneStep().reconstruct(p)
    assert one.metrics["score"] > 0.1 and one.method == "onestep"
    gn = GaussNewton(prior="tv", iterations=2).reconstruct(p)
    assert gn.metrics["chi2"] < chi0 and gn.method == "gn-tv" and gn.config["prior"] == "tv"
    assert make_reconstructor("gn").get_params()["prior"] == "tikhonov"
    assert make_reconstructor("neural", net="conv").lr == 1e-2  # the tuned step of the deep decoder
    with pytest.raises(ValueError, match="no setting"):
        make_reconstructor("onestep", iterations=3)


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


@pytest.mark.parametrize("option", [["--level", "9"], ["--iterations", "0"], ["--noise", "-1"], ["--lr", "0"]])
def test_cli_bad_options_create_nothing(tmp_path, capsys, option):
    from shared.cli import main

    out = tmp_path / "o"
    rc = main(["eit", "reconstruct", "--phantom", "two-inclusion", "--out", str(out), "--quiet", *option])
    assert rc == 2 and option[0] in capsys.readouterr().err
    assert not out.exists()


def test_cli_ktc_folder_as_output_keeps_inputs(tmp_path, capsys):
    from scipy.io import savemat

    from shared.cli import main

    from eit import CEM, ktc_mesh, synthetic_patterns, two_disks

    inj, mpat = synthetic_patterns(32)
    model = CEM(ktc_mesh("1500"), inj, mpat, z=1e-6)
    water = model.forward(np.full(model.n_sigma, 0.8))
    target = model.forward(two_disks().at(*model.cell_centroids.T))
    savemat(tmp_path / "ref.mat", {"Injref": inj, "Mpat": mpat, "Uelref": water[:, None]})
    savemat(tmp_path / "data1.mat", {"Inj": inj, "Mpat": mpat, "Uel": target[:, None]})
    before = {f: (tmp_path / f).read_bytes() for f in ("ref.mat", "data1.mat")}
    rc = main(["eit", "reconstruct", "--ktc", str(tmp_path), "--method", "onestep", "--out", str(tmp_path), "--quiet"])
    assert rc == 0 and (tmp_path / "sigma_onestep.png").stat().st_size > 0
    assert all((tmp_path / f).read_bytes() == data for f, data in before.items())
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["problem"] == "data1" and abs(m["sigma_bg"] - 0.8) < 1e-3
    # an --out that is a file is refused (exit 2), nothing is written
    rc = main(["eit", "reconstruct", "--ktc", str(tmp_path), "--method", "onestep", "--out",
               str(tmp_path / "ref.mat"), "--quiet"])
    assert rc == 2 and "not a folder" in capsys.readouterr().err
    assert (tmp_path / "ref.mat").read_bytes() == before["ref.mat"]


def test_cli_phantom_writes_outputs(tmp_path, capsys):
    from shared.cli import main

    out = tmp_path / "o"
    rc = main(["eit", "reconstruct", "--phantom", "two-inclusion", "--method", "neural", "onestep",
               "--iterations", "5", "--lr", "4e-3", "--stop", "none", "--net", "mlp", "--out", str(out)])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert "score" in m["methods"]["neural-mlp"] and "rel_l2" in m["methods"]["neural-mlp"]
    assert m["methods"]["neural-mlp"]["iterations"] == 5 and m["methods"]["neural-mlp"]["stopped_by"] == "iterations"
    assert m["config"]["neural-mlp"]["lr"] == 4e-3 and "onestep" in m["methods"]
    for f in ("comparison.png", "sigma_neural-mlp.png", "sigma_neural-mlp.xdmf", "sigma_neural-mlp.h5",
              "sigma_onestep.png", "sigma_onestep.xdmf"):
        assert (out / f).stat().st_size > 0
    stdout = capsys.readouterr().out
    assert "neural-mlp:" in stdout and "onestep:" in stdout and "wrote" in stdout


def test_cli_uncertainty_writes_std_maps_and_calibration(tmp_path):
    import json

    from shared.cli import main

    out = tmp_path / "u"
    rc = main(["eit", "reconstruct", "--phantom", "two-inclusion", "--level", "7", "--iterations", "5",
               "--members", "2", "--uncertainty", "--uncertainty-rank", "8", "--out", str(out), "--quiet"])
    assert rc == 0
    for name in ("std_neural-mlp.png", "std_neural-mlp.xdmf", "sigma_neural-mlp.png"):
        assert (out / name).stat().st_size > 0, name
    unc = json.loads((out / "metrics.json").read_text())["uncertainty"]["neural-mlp"]
    assert unc["mean_std"] > 0 and unc["members"] == 2 and min(unc["alpha"]) > 0  # one posterior per member
    cal = unc["calibration"]
    assert 0 <= cal["fraction_within"] <= 1 and cal["nominal"] == pytest.approx(0.9545, abs=1e-4)


@pytest.mark.data
def test_one_step_reproduces_its_training_target_score(shared_data):
    """The organisers' one-step method as their code runs it (see eit.baselines): effective noise
    model 1/100 of the stated 5% + 1%, Jacobian at 1 S/m, Otsu over the whole pixel square.
    Target 1 scores 0.6549 at level 1 and 0.3546 at level 7 (stored when it was made faithful:
    the four targets' means at levels 1/4/7 are 0.696/0.618/0.395 against the published
    0.696/0.621/0.396); linearised at the fitted water level it scored 0.6313 and 0.1437, and
    with the stated noise model 0.4026 at level 1."""
    from eit import OneStep, ktc_problem

    folder = shared_data / "eit" / "ktc2023" / "training"
    p1 = ktc_problem(folder, 1, 1, "1500")
    p7 = ktc_problem(folder, 1, 7, model=p1.model)
    assert OneStep().reconstruct(p1).metrics["score"] == pytest.approx(0.6549, abs=1e-3)
    assert OneStep().reconstruct(p7).metrics["score"] == pytest.approx(0.3546, abs=1e-3)
    at_water = OneStep(linearisation=None, segment="tank")
    assert at_water.reconstruct(p1).metrics["score"] == pytest.approx(0.6313, abs=1e-3)
    assert at_water.reconstruct(p7).metrics["score"] == pytest.approx(0.1437, abs=1e-3)
    stated = OneStep(noise_scale=1.0, linearisation=None, segment="tank")
    assert stated.reconstruct(p1).metrics["score"] == pytest.approx(0.4026, abs=1e-3)
    with pytest.raises(ValueError, match="linearisation point"):
        OneStep(linearisation=0.0).reconstruct(p1)
    with pytest.raises(ValueError, match="segmentation region"):
        OneStep(segment="disk").reconstruct(p1)


def test_uncertainty_adds_the_background_levels_share_to_the_networks(phantom_problem):
    """The water level is a plug-in estimate (a homogeneous fit to the reference): its relative
    misfit is the level's std, and every cell's variance gains ``(delta sigma)^2``."""
    from eit import NeuralEIT
    from eit.problem import background_misfit
    from eit.uncertainty import background_level_std, conductivity_uncertainty

    p = phantom_problem
    delta = background_level_std(p)
    assert 0 < delta < 0.2 and delta == p.info["bg_misfit"]  # the coarse model is not the simulation's
    u = np.array([1.0, -2.0, np.nan, 4.0])
    assert background_misfit(u, u) == 0 and background_misfit(1.1 * u, u) == pytest.approx(0.1)
    assert background_misfit(np.array([1.0, 5.0, 0.0, 4.0]), u, mask=[True, False, True, True]) == 0
    rec = NeuralEIT(net="mlp", iterations=20, members=1).reconstruct(p)
    with pytest.raises(ValueError, match="level_std"):
        conductivity_uncertainty(rec, p, rank=8, level_std=-0.1)
    unc = conductivity_uncertainty(rec, p, rank=8)
    sigma, std, net = rec.arrays["sigma"].reshape(-1), unc.arrays["std"], unc.arrays["std_network"]
    assert unc.metrics["level_std"] == delta and np.all(net > 0)
    np.testing.assert_allclose(std ** 2, net ** 2 + (delta * sigma) ** 2, rtol=1e-10)
    assert unc.metrics["mean_std"] > unc.metrics["mean_std_network"]
