"""Stopping rules on synthetic curves, where the right answer is known."""
import torch

from shared.stopping import Discrepancy, ESWMV, HeldOut, Plateau, StepRecord, make_rule
import pytest


def _rec(i, out=None, loss=1.0, heldout=None, pred=None):
    out = torch.zeros(4) if out is None else out
    return StepRecord(iteration=i, output=out, prediction=out if pred is None else pred, loss=loss, data=loss, heldout=heldout)


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
