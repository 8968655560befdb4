"""Stopping rules on synthetic curves, where the right answer is known."""
import math

import torch

from shared.stopping import (Discrepancy, ESWMV, HeldOut, MemberDiscrepancy, MemberStoppingRule, Plateau, StepRecord,
                             make_rule)
import pytest


def _rec(i, out=None, loss=1.0, heldout=None, pred=None):
    out = torch.zeros(4) if out is None else out
    return StepRecord(iteration=i, output=out, prediction=out if pred is None else pred, loss=loss, data=loss,
                      heldout=heldout)


def test_eswmv_finds_the_quiet_stretch():
    """Outputs jitter with amplitude |t - 300|/300: the variance is smallest near t=300."""
    g = torch.Generator().manual_seed(0)
    rule = ESWMV(window=20, patience=100)
    stop = None
    for t in range(2000):
        amp = abs(t - 300) / 300 + 1e-3
        if rule.update(_rec(t, out=amp * torch.randn(64, generator=g))):
            stop = t
            break
    assert stop is not None and stop < 600
    assert 280 <= rule.best_iteration <= 330


def test_eswmv_as_a_selector_keeps_the_last_output_of_a_settling_fit_and_a_pre_drift_one_of_a_drifting_fit():
    """ES-WMV with a patience longer than the fit (350 steps, patience 300) selects rather than
    stops: steps that shrink under a cosine decay give the smallest window variance at the end, so
    the last output is returned; a fit that drifts away after step 180 (the variance rises
    as the outputs move) returns an output from before the drift."""
    g = torch.Generator().manual_seed(0)
    target, direction = torch.randn(256, generator=g), torch.randn(256, generator=g)
    for drift_from in (None, 180):
        rule = ESWMV(window=100, patience=300, source="raw")
        for t in range(350):
            step = 0.5 * (1 + math.cos(math.pi * t / 350)) + 1e-3  # the cosine decay of the step
            out = target + 0.05 * step * torch.randn(256, generator=g)
            if drift_from is not None and t > drift_from:
                out = out + 0.02 * (t - drift_from) * direction  # the memorised noise creeping in
            rule.update(StepRecord(iteration=t, output=out, prediction=out, loss=0.0, data=0.0, raw_output=out))
        if drift_from is None:
            assert rule.best_iteration == 349
        else:
            assert 150 <= rule.best_iteration <= drift_from + 10


def test_eswmv_rise_stops_a_collapse_at_once_and_ignores_the_small_swings_of_a_settling_fit():
    """With ``rise=3`` the rule stops as soon as the window variance triples from its minimum
    (outputs that start moving fast), returning the output at the minimum; swings of less than
    3x, as in a fit that settles, do not stop it, and neither does a patience that is not over."""
    g = torch.Generator().manual_seed(0)
    for jump_at, expect_stop in ((120, True), (None, False)):
        rule = ESWMV(window=25, patience=300, source="raw", rise=3.0)
        stopped = None
        for t in range(350):
            decay = 0.5 * (1 + math.cos(math.pi * t / 350)) + 0.01  # the cosine decay of the step
            amp = 0.01 * decay * (1.5 if 100 <= t < 110 else 1.0)  # a passing 1.5x swing: not a collapse
            if jump_at is not None and t >= jump_at:
                amp = 0.2  # the outputs start to move twenty times faster
            out = amp * torch.randn(64, generator=g)
            if rule.update(StepRecord(iteration=t, output=out, prediction=out, loss=0.0, data=0.0, raw_output=out)):
                stopped = t
                break
        if expect_stop:
            assert stopped is not None and jump_at <= stopped <= jump_at + 5 and rule.best_iteration < jump_at
        else:
            assert stopped is None
    with pytest.raises(ValueError, match="rise"):
        ESWMV(rise=1.0)


def test_heldout_returns_the_minimum():
    rule = HeldOut(patience=30)
    curve = [(t - 100) ** 2 / 1e4 + 1 for t in range(1000)]
    for t, v in enumerate(curve):
        if rule.update(_rec(t, out=torch.full((2,), float(t)), heldout=v)):
            break
    assert rule.best_iteration == 100 and t == 130
    assert float(rule.best_output[0]) == 100


def test_discrepancy_stops_at_the_noise_level():
    y = torch.zeros(100)
    rule = Discrepancy(y, noise_std=0.1, tau=1.0)
    for t in range(100):
        pred = torch.full((100,), 1.0 / (t + 1))  # residual shrinks like 1/t
        if rule.update(_rec(t, pred=pred)):
            break
    assert t == 9  # (1/10)^2 / 0.1^2 = 1


def test_plateau():
    rule = Plateau(window=10, tol=1e-3)
    for t in range(1000):
        if rule.update(_rec(t, loss=max(1.0 - 0.01 * t, 0.5))):
            break
    assert 50 <= t <= 61


def test_make_rule():
    assert make_rule("none") is None
    assert isinstance(make_rule("eswmv", window=5, patience=5), ESWMV)
    with pytest.raises(ValueError, match="unknown stopping rule"):
        make_rule("magic")
    with pytest.raises(ValueError, match="window"):
        ESWMV(window=1)


def test_eswmv_on_raw_outputs_selects_by_raw_variance_and_returns_the_output():
    """Raw outputs jitter least near t=300; the averaged output drifts ever more slowly,
    so its own variance never stops shrinking. source='raw' must find t=300 and return
    the averaged output of that iteration."""
    g = torch.Generator().manual_seed(0)
    raw_rule, avg_rule = ESWMV(window=20, patience=100, source="raw"), ESWMV(window=20, patience=100)
    stop = None
    for t in range(1500):
        raw = (abs(t - 300) / 300 + 1e-3) * torch.randn(64, generator=g)
        avg = torch.full((64,), 1.0 / (t + 1))  # slow, smooth drift
        rec = StepRecord(iteration=t, output=avg, prediction=raw, loss=1.0, data=1.0, raw_output=raw)
        avg_rule.update(rec)
        if stop is None and raw_rule.update(rec):
            stop = t
    assert stop is not None and 280 <= raw_rule.best_iteration <= 330
    assert torch.equal(raw_rule.best_output, torch.full((64,), 1.0 / (raw_rule.best_iteration + 1)))
    assert avg_rule.best_iteration > 1400  # the averaged output's variance keeps falling
    with pytest.raises(ValueError, match="source"):
        ESWMV(source="ema")


def test_fit_passes_the_raw_output_to_rules():
    from shared.fit import Objective, Optimiser, Smoothing, fit
    from shared.networks import MLP

    seen = []
    z = torch.linspace(-1, 1, 16).unsqueeze(-1)
    fit(MLP(1, 1, (8,)), z, Objective(torch.sin(z)), optimiser=Optimiser(iterations=3),
        smoothing=Smoothing(average=0.9),
        callbacks=[seen.append])
    assert all(r.raw_output is not None and r.raw_output.shape == (16, 1) for r in seen)
    assert not torch.equal(seen[-1].raw_output, seen[-1].output)  # averaged differs from raw


# Per-member stopping: members of a batched model stop independently.

class _FreezeAt(MemberStoppingRule):
    """Freezes member i at step ``at[i]`` (never when negative)."""

    def __init__(self, at, stop_fraction=1.0):
        self.at = at
        super().__init__(len(at), stop_fraction)

    def criterion(self, record):
        return torch.tensor([0 <= a <= record.iteration for a in self.at])


def _batched(P=3, seed=0):
    from shared.networks import BatchedMLP

    torch.manual_seed(seed)
    z = torch.linspace(-1, 1, 16).view(1, 16, 1).repeat(P, 1, 1)
    y = torch.sin(3 * z) * torch.arange(1, P + 1).view(P, 1, 1)
    return BatchedMLP(P, 1, 1, (8, 8)), z, y


def test_frozen_members_keep_their_parameters_exactly():
    """Member 0 freezes at step 3: from then on its rows are the parameters step 3's output
    was computed with (Adam's momentum cannot move them); member 1 trains on until step 10."""
    from shared.fit import Objective, Optimiser, fit

    net, z, y = _batched(P=2)
    snaps, outs = [], []

    def keep(record):  # called after step t's update: the parameters of step t + 1
        snaps.append([p.detach().clone() for p in net.parameters()])
        outs.append(record.output.clone())

    res = fit(net, z, Objective(y), optimiser=Optimiser(lr=1e-2, iterations=50), stopping=_FreezeAt([3, 10]),
              callbacks=[keep])
    assert res.stopped_by == "stopping" and res.stop_iteration == 11
    assert res.member_stop_iterations.tolist() == [3, 10] and res.selected_iteration == 10
    assert res.history["frozen"] == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2]
    at3 = snaps[2]  # the parameters that produced step 3's output
    for t in range(4, 11):
        assert all(torch.equal(p[0], q[0]) for p, q in zip(snaps[t], at3)), t
    assert any(not torch.equal(p[1], q[1]) for p, q in zip(snaps[5], snaps[4]))  # member 1 still trains
    assert all(torch.equal(p[0], q[0]) for p, q in zip(net.parameters(), at3))
    assert all(torch.equal(p[1], q[1]) for p, q in zip(net.parameters(), snaps[9]))
    # The output: each member at its own freeze step, which is also what the fitted model gives.
    assert torch.equal(res.output[0], outs[3][0]) and torch.equal(res.output[1], outs[10][1])
    assert torch.equal(res.output, res.final)


def test_member_rule_ends_at_a_fraction_and_iterations_stay_the_cap():
    from shared.fit import Objective, Optimiser, fit

    net, z, y = _batched(P=4)
    outs = []
    res = fit(net, z, Objective(y), optimiser=Optimiser(iterations=40), stopping=_FreezeAt([2, 5, -1, -1], 0.5),
              callbacks=[lambda r: outs.append(r.output.clone())])
    assert res.stopped_by == "stopping" and res.stop_iteration == 6 and res.selected_iteration == 5
    assert res.member_stop_iterations.tolist() == [2, 5, -1, -1]
    assert torch.equal(res.output[2:], outs[5][2:]) and torch.equal(res.output[0], outs[2][0])
    net, z, y = _batched(P=2)
    res = fit(net, z, Objective(y), optimiser=Optimiser(iterations=20), stopping=_FreezeAt([4, -1]))
    assert res.stopped_by == "iterations" and res.stop_iteration == 20
    assert res.member_stop_iterations.tolist() == [4, -1] and res.history["frozen"][-1] == 1


def test_member_rule_needs_batched_parameters():
    from shared.fit import Objective, Optimiser, fit
    from shared.networks import MLP

    z = torch.linspace(-1, 1, 16).unsqueeze(-1)
    with pytest.raises(ValueError, match="leading dimension is 3"):
        fit(MLP(1, 1, (8,)), z, Objective(torch.sin(z)), optimiser=Optimiser(iterations=2),
            stopping=_FreezeAt([1, 1, 1]))


def test_member_discrepancy_freezes_each_member_at_its_noise_level():
    """Residuals 1/(t+1) per member: member i freezes at the first t >= min_steps with
    1/(t+1) <= tau sigma_i; a non-finite sigma never freezes."""
    sigma = torch.tensor([0.5, 0.1, 0.02, float("nan")])
    rule = MemberDiscrepancy(sigma, lambda rec: torch.full((4,), 1.0 / (rec.iteration + 1)), tau=1.0, min_steps=3)
    for t in range(100):
        done = rule.update(_rec(t, out=torch.full((4, 2), float(t))))
    assert not done
    assert rule.stop_iterations.tolist() == [3, 9, 49, -1]  # 0.5 would be reached at t=1, but min_steps=3
    assert rule.stop_residuals[:3].tolist() == pytest.approx([1 / 4, 1 / 10, 1 / 50])
    assert rule.best_output[:, 0].tolist() == [3.0, 9.0, 49.0, 99.0]
    rule = MemberDiscrepancy(sigma[:3], lambda rec: torch.full((3,), 1.0 / (rec.iteration + 1)), tau=2.0)
    stops = [t for t in range(100) if rule.update(_rec(t, out=torch.zeros(3, 1)))]
    assert stops[0] == 24 and rule.stop_iterations.tolist() == [0, 4, 24]  # 1/(t+1) <= 2 sigma
    with pytest.raises(ValueError, match="per member"):
        MemberDiscrepancy(torch.ones(2, 2), lambda rec: None)
    with pytest.raises(ValueError, match="stop_fraction"):
        MemberDiscrepancy(torch.ones(2), lambda rec: None, stop_fraction=0.0)


def test_a_blocked_network_told_of_frozen_members_fits_as_one_that_evaluates_all():
    """The engine tells a BatchedMLP which members froze, and it stops evaluating them: the fit
    is the same (to rounding) as with a network that evaluates every member, and the hold is
    released when the fit ends."""
    from shared.fit import Objective, Optimiser, fit
    from shared.networks import BatchedMLP

    results = []
    for tell in (True, False):
        torch.manual_seed(0)
        P = 6
        z = torch.linspace(-1, 1, 16).view(1, 16, 1).repeat(P, 1, 1)
        y = torch.sin(3 * z) * torch.arange(1, P + 1).view(P, 1, 1)
        net = BatchedMLP(P, 1, 1, (8, 8), block=2)
        if not tell:
            net.hold_members = None  # not a listener: every member is evaluated at every step
        res = fit(net, z, Objective(y), optimiser=Optimiser(lr=1e-2, iterations=40),
                  stopping=_FreezeAt([3, 5, 8, 12, 20, 30]))
        assert net._hold is None
        results.append(res)
    told, plain = results
    assert told.member_stop_iterations.tolist() == plain.member_stop_iterations.tolist()
    assert torch.allclose(told.output, plain.output, atol=1e-5)
    assert max(abs(a - b) for a, b in zip(told.history["loss"], plain.history["loss"])) < 1e-4
