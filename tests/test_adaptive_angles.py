"""Adaptive CT angles: the information-gain choice, the factored Gaussian update, one small loop."""
import numpy as np
import torch

from shared.image.adaptive_angles import (adaptive_ct, equidistant_indices, information_gain, select_angles,
                                          simulate_sinogram)
from shared.operators import Radon
from shared.uncertainty import condition_factor

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
