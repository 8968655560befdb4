"""Stopping rules on synthetic curves, where the right answer is known."""
import torch

from shared.stopping import Discrepancy, ESWMV, HeldOut, Plateau, StepRecord, make_rule
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
