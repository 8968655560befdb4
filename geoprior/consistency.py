"""Making overlapping charts agree.

A point ``p`` that lies in several patches is predicted by each of their charts (the
chart sample matched to ``p``).  The consensus position is the mean of those
predictions::

    xbar_p = 1/|I_p| sum_{i in I_p} phi_i(u_{i, sigma_i^{-1}(p)}),

each chart being mapped back to world coordinates first.  The charts are then refitted
(warm start, fixed matching, squared error) to the consensus positions, which pulls
neighbouring charts onto one surface where they overlap; averaging independent smooth
fits also lowers the noise left in each.  This is the "average and refit" variant of the
paper's transition term, run as a second :func:`shared.fit.fit` call.
"""
from __future__ import annotations

import numpy as np
import torch

from geoprior.cover import Cover

__all__ = ["consensus_points", "consensus_targets"]


def consensus_points(cover: Cover, pred_local: np.ndarray, perm: np.ndarray,
                     n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean world-space prediction of every cloud point over the charts that contain it.

    ``pred_local`` ``(P, K, 3)`` are chart outputs at the samples, ``perm`` ``(P, K)`` the
    matching (sample ``j`` of patch ``i`` predicts point ``index[i, perm[i, j]]``).
    Returns ``(n_points, 3)`` means and the ``(n_points,)`` number of charts per point.
    """
    world = cover.to_world(pred_local)
    point = np.take_along_axis(cover.index, perm, axis=1)
    valid = cover.mask & (point >= 0)
    ids = point[valid]
    sums = np.zeros((n_points, 3))
    for k in range(3):
        sums[:, k] = np.bincount(ids, world[..., k][valid], minlength=n_points)
    counts = np.bincount(ids, minlength=n_points)
    mean = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], np.nan)
    return mean, counts


def consensus_targets(cover: Cover, pred_local: np.ndarray, perm: np.ndarray, n_points: int) -> torch.Tensor:
    """Consensus positions arranged per chart sample, in each patch's frame: ``(P, K, 3)``."""
    mean, _ = consensus_points(cover, pred_local, perm, n_points)
    point = np.take_along_axis(cover.index, perm, axis=1)
    world = mean[np.clip(point, 0, None)]
    world[~cover.mask] = 0.0
    local = cover.to_local(world)
    local[~cover.mask] = 0.0
    return torch.as_tensor(local, dtype=torch.float32)
