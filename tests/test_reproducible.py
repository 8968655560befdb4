"""Every front end gives identical outputs when run twice with the same seed (on the CPU),
whatever the global random state was: fits draw from their own seeded generators."""
from __future__ import annotations

import numpy as np
import torch


def _scramble_global_generators(k: int) -> None:
    torch.manual_seed(1000 + k)
    np.random.seed(1000 + k)
    torch.rand(17)


def test_image_dip_is_reproducible():
    from shared.image import DeepImagePrior
    from shared.image.tasks import denoise_problem

    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    outs = []
    for k in range(2):
        _scramble_global_generators(k)
        problem = denoise_problem(x, multiple=16, sigma=0.1, simulate=True, seed=3)
        outs.append(DeepImagePrior(iterations=15, stop="none", seed=3).reconstruct(problem))
    assert torch.equal(outs[0].arrays["result"], outs[1].arrays["result"])
    assert outs[0].fit.history["loss"] == outs[1].fit.history["loss"]


def test_geoprior_is_reproducible():
    from geoprior import DeepGeometricPrior
    from geoprior.shapes import noisy_torus

    _, points, _ = noisy_torus(n=800, noise=0.01, seed=2, sections=(32, 16))
    outs = []
    for k in range(2):
        _scramble_global_generators(k)
        rec = DeepGeometricPrior(radius=0.15, hidden=(8, 8), iterations=15, rematch_start=5, rematch_every=5,
                                 consistency_iterations=3, density=2, depth=5, seed=4)
        outs.append(rec.reconstruct(points))
    for key in ("points", "normals", "vertices", "faces"):
        assert np.array_equal(outs[0].arrays[key], outs[1].arrays[key]), key


def test_neural_eit_is_reproducible():
    from eit.methods import make_reconstructor
    from eit.problem import simulated_problem

    problem = simulated_problem("two-inclusion", "1500", 0.01, seed=0, level=1)
    outs = []
    for k in range(2):
        _scramble_global_generators(k)
        outs.append(make_reconstructor("neural", iterations=4, seed=5).reconstruct(problem))
    assert np.array_equal(outs[0].arrays["sigma"], outs[1].arrays["sigma"])
