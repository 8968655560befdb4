"""The fitting engine: objective, determinism, masking, averaging, callbacks, errors."""
import math

import pytest
import torch

from shared.fit import Objective, Optimiser, Smoothing, Tracking, fit
from shared.losses import WeightedSquaredError, mse_loss
from shared.networks import MLP, BatchedMLP
from shared.stopping import Discrepancy, ESWMV, HeldOut


def _toy(seed=0):
    torch.manual_seed(seed)
    z = torch.linspace(-1, 1, 64).unsqueeze(-1)
    y = torch.sin(3 * z)
    return MLP(1, 1, (32, 32)), z, y


def test_fit_lowers_the_loss_and_records_history():
    net, z, y = _toy()
    res = fit(net, z, Objective(y), optimiser=Optimiser(lr=1e-2, iterations=300))
    assert res.history["loss"][-1] < 0.1 * res.history["loss"][0]
    assert res.stop_iteration == 300 and res.stopped_by == "iterations"
    assert res.output.shape == y.shape and res.wall_time_s > 0


def test_fit_is_deterministic_under_a_seed():
    outs = []
    for _ in range(2):
        net, z, y = _toy(seed=3)
        outs.append(fit(net, z, Objective(y), optimiser=Optimiser(iterations=50),
                        smoothing=Smoothing(input_noise=0.05), seed=7).output)
    assert torch.equal(outs[0], outs[1])


def test_forward_operator_and_regulariser_enter_the_objective():
    net, z, y = _toy()
    A = lambda x: 2.0 * x
    reg = (0.5, lambda x: (x ** 2).mean())
    res = fit(net, z, Objective(2.0 * y, physics=A, regularisers={"l2": reg}), optimiser=Optimiser(iterations=1))
    with torch.no_grad():
        net2, _, _ = _toy()
        out = net2(z)
        expected = mse_loss(2.0 * out, 2.0 * y) + 0.5 * (out ** 2).mean()
    assert math.isclose(res.history["loss"][0], float(expected), rel_tol=1e-5)


def test_non_finite_measurements_are_treated_as_missing():
    net, z, y = _toy()
    y_bad = y.clone()
    y_bad[::4] = float("nan")
    res = fit(net, z, Objective(y_bad), optimiser=Optimiser(iterations=100))
    assert all(math.isfinite(v) for v in res.history["loss"])


def test_all_missing_measurements_are_rejected():
    net, z, y = _toy()
    with pytest.raises(ValueError, match="no finite measurement"):
        fit(net, z, Objective(torch.full_like(y, float("nan"))), optimiser=Optimiser(iterations=5))


def test_averaging_and_metrics():
    net, z, y = _toy()
    res = fit(net, z, Objective(y), optimiser=Optimiser(iterations=40), smoothing=Smoothing(average=0.9),
              tracking=Tracking({"mse": lambda a, b: float(((a - b) ** 2).mean())}, reference=y, every=10))
    assert res.averaged is not None and torch.equal(res.output, res.averaged)
    assert res.history["metric_iteration"] == [0, 10, 20, 30, 39]
    value, it = res.best_metric("mse", mode="min")
    assert it in res.history["metric_iteration"] and value == min(res.history["mse"])


def test_callbacks_see_every_step():
    net, z, y = _toy()
    seen = []
    fit(net, z, Objective(y), optimiser=Optimiser(iterations=12), callbacks=[lambda r: seen.append(r.iteration)])
    assert seen == list(range(12))


def test_lbfgs_optimizer_runs():
    net, z, y = _toy()
    res = fit(net, z, Objective(y), optimiser=Optimiser(lr=1.0, iterations=30, name="lbfgs"))
    assert res.history["loss"][-1] < res.history["loss"][0]


def test_cosine_schedule_settles_the_parameters():
    # With a constant rate Adam keeps jittering around the minimum of a noisy-free toy
    # problem; the decayed rate ends closer to it.
    finals = {}
    for schedule in ("constant", "cosine"):
        net, z, y = _toy(seed=1)
        res = fit(net, z, Objective(y), optimiser=Optimiser(lr=3e-2, iterations=400, schedule=schedule), seed=0)
        finals[schedule] = res.history["loss"][-1]
    assert finals["cosine"] < finals["constant"]


def test_bad_settings_are_rejected():
    net, z, y = _toy()
    with pytest.raises(ValueError, match="lr_schedule"):
        fit(net, z, Objective(y), optimiser=Optimiser(schedule="warmup"))
    with pytest.raises(ValueError, match="optimizer"):
        fit(net, z, Objective(y), optimiser=Optimiser(name="sgdx"))
    with pytest.raises(ValueError, match="iterations"):
        fit(net, z, Objective(y), optimiser=Optimiser(iterations=0))
    with pytest.raises(ValueError, match="shape"):
        fit(net, z, Objective(y[:10]), optimiser=Optimiser(iterations=1))


def test_batched_networks_fit_independently():
    """One fit of a BatchedMLP equals separate fits of its members (sum of losses)."""
    torch.manual_seed(0)
    bnet = BatchedMLP(3, 2, 3, hidden=(16, 16))
    members = [bnet.member(b) for b in range(3)]
    u = torch.rand(3, 20, 2)
    targets = torch.randn(3, 20, 3)
    loss = lambda p, t, mask=None: ((p - t) ** 2).mean(dim=(1, 2)).sum()
    fit(bnet, u, Objective(targets, data=loss), optimiser=Optimiser(lr=1e-2, iterations=20), seed=None)
    for b, m in enumerate(members):
        fit(m, u[b], Objective(targets[b], data=lambda p, t, mask=None: ((p - t) ** 2).mean()),
            optimiser=Optimiser(lr=1e-2, iterations=20), seed=None)
        with torch.no_grad():
            assert torch.allclose(m(u[b]), bnet(u)[b], atol=1e-5)


def test_heldout_split_and_rule():
    net, z, y = _toy()
    y_noisy = y + 0.3 * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    rule = HeldOut(fraction=0.2, patience=50)
    res = fit(net, z, Objective(y_noisy), optimiser=Optimiser(lr=1e-2, iterations=2000), stopping=rule)
    assert len(res.history["heldout"]) == res.stop_iteration
    assert res.selected_iteration == rule.best_iteration
    assert res.history["heldout"][res.selected_iteration] == pytest.approx(min(res.history["heldout"]))


def test_discrepancy_rule_on_a_real_fit():
    net, z, y = _toy()
    sigma = 0.2
    y_noisy = y + sigma * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    res = fit(net, z, Objective(y_noisy, data=WeightedSquaredError(sigma)), optimiser=Optimiser(iterations=3000),
              stopping=Discrepancy(y_noisy, sigma, tau=1.0))
    assert res.stopped_by == "stopping"
    final_chi2 = float((((res.output - y_noisy) / sigma) ** 2).mean())
    assert final_chi2 <= 1.0
    # Stopped at the noise level, it has not interpolated the noise.
    assert float(((res.output - y) ** 2).mean()) < sigma ** 2


def test_eswmv_on_a_real_fit_selects_an_output():
    net, z, y = _toy()
    rule = ESWMV(window=20, patience=100)
    res = fit(net, z, Objective(y + 0.1), optimiser=Optimiser(iterations=3000), stopping=rule)
    assert res.stopped_by == "stopping"
    assert 0 <= res.selected_iteration < res.stop_iteration


def test_heldout_split_is_hidden_from_the_data_term():
    """The rule's split never enters the data term: the fit's data loss equals the loss on the kept entries."""
    net, z, y = _toy()
    rule = HeldOut(fraction=0.25, patience=1000)
    res = fit(net, z, Objective(y), optimiser=Optimiser(iterations=1), stopping=rule)
    held = rule.split(y, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = _toy()[0](z)
    assert 0 < int(held.sum()) < y.numel()
    assert res.history["data"][0] == pytest.approx(float(mse_loss(out, y, mask=~held)), rel=1e-6)
    assert res.history["heldout"][0] == pytest.approx(float(mse_loss(out, y, mask=held)), rel=1e-6)
    with pytest.raises(ValueError, match="fraction"):
        HeldOut(fraction=1.5)


def test_metrics_need_no_reference():
    net, z, y = _toy()
    res = fit(net, z, Objective(y), optimiser=Optimiser(iterations=21),
              tracking=Tracking({"mean": lambda x: float(x.mean())}, every=10))
    assert res.history["metric_iteration"] == [0, 10, 20] and len(res.history["mean"]) == 3


def test_result_keeps_what_uncertainty_needs():
    net, z, y = _toy()
    y_missing = y.clone()
    y_missing[0] = float("nan")
    res = fit(net, z, Objective(y_missing, physics=lambda x: 2 * x), optimiser=Optimiser(iterations=5))
    assert res.z is not None and torch.equal(res.z, z)
    assert torch.isnan(res.objective.y[0]) and torch.equal(res.objective.y[1:], y_missing[1:])
    assert torch.allclose(res.evaluate(), res.final)


class _CountingTerm:
    """A data term with a step schedule: records the steps it was told and its calls."""

    def __init__(self) -> None:
        self.steps, self.calls = [], 0

    def begin_step(self, step: int) -> None:
        self.steps.append(step)

    def __call__(self, pred, target, mask=None):
        self.calls += 1
        return mse_loss(pred, target, mask)


def test_schedules_follow_steps_not_calls_under_lbfgs():
    net, z, y = _toy()
    term = _CountingTerm()
    fit(net, z, Objective(y, data=term), optimiser=Optimiser(lr=1.0, iterations=6, name="lbfgs"))
    assert term.steps == list(range(6))
    assert term.calls > 6  # L-BFGS evaluates the objective several times per step


def test_non_finite_learning_rate_is_refused():
    net, z, y = _toy()
    with pytest.raises(ValueError, match="learning rate"):
        fit(net, z, Objective(y), optimiser=Optimiser(lr=float("inf")))


def test_a_signal_stops_the_fit_at_the_end_of_its_step():
    import os
    import signal

    net, z, y = _toy()

    def interrupt(record):
        if record.iteration == 4:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    res = fit(net, z, Objective(y), optimiser=Optimiser(iterations=50), smoothing=Smoothing(average=0.5),
              callbacks=[interrupt])
    assert res.stopped_by == "interrupted" and res.interrupted and res.stop_iteration == 5
    assert torch.equal(res.output, res.averaged)  # the output the fit would have selected
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_a_second_signal_raises_at_once():
    import os
    import signal

    net, z, y = _toy()

    def interrupt_twice(record):
        if record.iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        fit(net, z, Objective(y), optimiser=Optimiser(iterations=50), callbacks=[interrupt_twice])


def test_fit_leaves_the_global_generators_alone():
    net, z, y = _toy()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(net, z, Objective(y), optimiser=Optimiser(iterations=3), smoothing=Smoothing(input_noise=0.1), seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_weighted_misfit_of_an_ensemble_is_the_members_mean():
    # A batch of predictions (K, m) against one target (m,) with a mask of the target's shape.
    y = torch.tensor([1.0, 2.0, float("nan"), 4.0])
    mask = torch.isfinite(y)
    pred = torch.tensor([[1.0, 2.0, 0.0, 5.0], [2.0, 2.0, 0.0, 4.0]])
    d = WeightedSquaredError(torch.tensor(0.5))
    single = [float(d(p, torch.nan_to_num(y), mask=mask)) for p in pred]
    assert float(d(pred, torch.nan_to_num(y), mask=mask)) == pytest.approx(sum(single) / 2)
    assert single == [pytest.approx(4 / 3), pytest.approx(4 / 3)]


def test_optimiser_groups_give_each_prefix_its_step_and_decay():
    """Parameters named by a prefix take that group's step; weight decay w is the gradient of (w/2)|p|^2."""
    from torch import nn

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.z = nn.Parameter(torch.zeros(3))
            self.w = nn.Parameter(torch.zeros(3))

        def forward(self, *unused):
            return (self.z + self.w)[None]

    y = torch.ones(1, 3)
    model = Two()
    fit(model, None, Objective(y), optimiser=Optimiser(lr=1e-3, iterations=1, groups={"z": {"lr": 1e-1}}))
    # one Adam step moves each parameter by its learning rate (sign of the gradient)
    torch.testing.assert_close(model.z.detach(), torch.full((3,), 0.1))
    torch.testing.assert_close(model.w.detach(), torch.full((3,), 1e-3))
    # a strong decay on z alone holds z near 0 while w fits the data
    model = Two()
    fit(model, None, Objective(y), optimiser=Optimiser(lr=0.05, iterations=400, groups={"z": {"weight_decay": 10.0}}))
    assert float(model.z.detach().abs().max()) < 0.1 and float((model.w.detach() - 1).abs().max()) < 0.15
    with pytest.raises(ValueError, match="match no trainable parameter"):
        fit(Two(), None, Objective(y), optimiser=Optimiser(groups={"theta": {"lr": 1.0}}))
    with pytest.raises(ValueError, match="unknown settings"):
        fit(Two(), None, Objective(y), optimiser=Optimiser(groups={"z": {"momentum": 0.9}}))
