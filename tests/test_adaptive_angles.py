"""Adaptive CT angles: the information-gain choice, the factored Gaussian update, one small loop."""
import numpy as np
import pytest
import torch

from shared.image.adaptive_angles import (adaptive_ct, equidistant_indices, fit_angles, information_gain,
                                          reconstruction, select_angles, simulate_sinogram)
from shared.image.edip import network_output
from shared.operators import Radon
from shared.uncertainty import condition_factor, ensemble_statistics, member_fits, mixture_factor

SIZE = 32
CANDIDATES = np.arange(12) * np.pi / 12


def _bar_pixels() -> list[tuple[int, int]]:
    """A thin horizontal bar: one row, 16 pixels."""
    return [(SIZE // 2, c) for c in range(8, 24)]


def _projections(F: torch.Tensor) -> torch.Tensor:
    """``R_c F`` for every candidate: ``(r, C, d)``."""
    return Radon(torch.as_tensor(CANDIDATES), SIZE)(F.T.reshape(F.shape[1], 1, SIZE, SIZE))[:, 0]


def _spread(G: torch.Tensor) -> np.ndarray:
    """Detector bins each candidate's projection of the bar touches."""
    return (G.abs().sum(0) > 1e-6).sum(-1).numpy()


def test_a_thin_structure_is_measured_where_it_is_resolved_or_where_it_is_summed():
    """Bar pixels with independent unknown values are best told apart by a view across the bar,
    which spreads them over many detector bins; a bar whose pixels move together (one unknown
    amplitude) by the view that stacks them in the fewest bins (the largest signal)."""
    independent = torch.zeros(SIZE * SIZE, len(_bar_pixels()))
    for j, (r, c) in enumerate(_bar_pixels()):
        independent[r * SIZE + c, j] = 1.0
    G = _projections(independent)
    spread = _spread(G)
    first = select_angles(G, 0.01, 1)[0]
    # (linear interpolation spreads oblique views over two bins per pixel, so "most bins" is
    # only approximately "best resolved": the pick must be one of the views across the bar)
    assert spread[first] >= 0.85 * spread.max() and spread.max() > 4 * spread.min()
    together = independent.sum(1, keepdim=True)
    Gt = _projections(together)
    first_t = select_angles(Gt, 0.01, 1)[0]
    assert _spread(Gt)[first_t] == _spread(Gt).min()


def test_greedy_picks_account_for_each_other_and_for_measured_angles():
    g = torch.Generator().manual_seed(0)
    F = torch.randn(SIZE * SIZE, 20, generator=g, dtype=torch.float64) * 0.1
    G = _projections(F.float()).double()
    picks = select_angles(G, 0.01, 4, exclude=[0, 6])
    assert len(set(picks)) == 4 and not {0, 6} & set(picks)
    c = picks[0]
    # After conditioning on c, measuring c again carries less information than it did.
    Fc = condition_factor(F, G[:, c, :].T, 0.01)
    after = information_gain(_projections(Fc.float()).double(), 0.01)
    before = information_gain(G, 0.01)
    assert after[c] < 0.5 * before[c]


def test_condition_factor_is_the_gaussian_update():
    g = torch.Generator().manual_seed(1)
    F = torch.randn(7, 5, generator=g, dtype=torch.float64)
    L = torch.randn(3, 7, generator=g, dtype=torch.float64)
    s = 0.3
    C = F @ F.T
    exact = C - C @ L.T @ torch.linalg.solve(L @ C @ L.T + s * torch.eye(3, dtype=torch.float64), L @ C)
    F2 = condition_factor(F, L @ F, s)
    assert torch.allclose(F2 @ F2.T, exact, atol=1e-10)


def test_adaptive_loop_adds_new_angles_and_scores_each_round():
    x = torch.zeros(1, 1, SIZE, SIZE)
    x[..., 10:22, 15:17] = 1.0  # a thin vertical bar
    x[..., 6:12, 6:12] = 0.5
    sino, std = simulate_sinogram(x, CANDIDATES, 0.01, seed=0)
    run = adaptive_ct(x, CANDIDATES, sino, std, start=2, step=1, budget=3, iterations=25, rank=8)
    assert len(run.indices) == 3 and len(set(run.indices)) == 3
    assert set(equidistant_indices(len(CANDIDATES), 2)) < set(run.indices)
    assert set(run.psnr) == {2, 3} and all(np.isfinite(v) for v in run.psnr.values())


def test_mixture_factor_is_the_moment_matched_mixture_covariance():
    g = torch.Generator().manual_seed(2)
    n, K = 6, 3
    means = torch.randn(K, n, generator=g, dtype=torch.float64)
    factors = [torch.randn(n, r, generator=g, dtype=torch.float64) for r in (2, 4, 3)]
    F = mixture_factor(means, factors)
    m = means.mean(0)
    exact = sum(f @ f.T + torch.outer(mu - m, mu - m) for f, mu in zip(factors, means)) / K
    assert F.shape == (n, 2 + 4 + 3 + K)
    assert torch.allclose(F @ F.T, exact, atol=1e-12)
    _, std = ensemble_statistics(means, torch.stack([f.pow(2).sum(1).sqrt() for f in factors]))
    assert np.allclose(std ** 2, torch.diag(exact).numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="one row per factor"):
        mixture_factor(means[:2], factors)


def test_members_fit_side_by_side_as_their_separate_fits():
    """The grouped ensemble's fit equals each seed's own fit (float64: in float32 the fits
    drift apart by rounding, which Adam amplifies; see tests/test_image_ensemble.py)."""
    x = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.float64)
    x[..., 8:24, 12:20] = 0.7
    sino, _ = simulate_sinogram(x, CANDIDATES, 0.01, seed=0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the networks finetune builds
    try:
        both = fit_angles(sino, CANDIDATES, [0, 3, 6, 9], SIZE, iterations=5, seed=4, members=2).result
        parts = member_fits(both, keep_dim=True)
        for k in range(2):
            alone = fit_angles(sino, CANDIDATES, [0, 3, 6, 9], SIZE, iterations=5, seed=4 + k).result
            torch.testing.assert_close(network_output(parts[k].model, parts[k].z),
                                       network_output(alone.model, alone.z), rtol=0, atol=1e-10)
    finally:
        torch.set_default_dtype(default)
    assert (network_output(parts[0].model, parts[0].z) - network_output(parts[1].model, parts[1].z)).abs().max() > 1e-3
    assert torch.allclose(reconstruction(both), torch.stack([network_output(p.model, p.z).clamp(0, 1)
                                                              for p in parts]).mean(0), atol=1e-7)


def test_adaptive_loop_with_a_mixture_of_members():
    x = torch.zeros(1, 1, SIZE, SIZE)
    x[..., 10:22, 15:17] = 1.0
    sino, std = simulate_sinogram(x, CANDIDATES, 0.01, seed=0)
    run = adaptive_ct(x, CANDIDATES, sino, std, start=2, step=2, budget=4, iterations=15, rank=6, members=2)
    assert len(run.indices) == 4 and len(set(run.indices)) == 4 and set(run.psnr) == {2, 4}
    assert all(np.isfinite(v) for v in run.psnr.values())
