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
                                 consistency_iterations=3, density=2, depth=5, seed=4, mesh_threads=1)
        outs.append(rec.reconstruct(points))
    for key in ("points", "normals", "vertices", "faces"):
        assert np.array_equal(outs[0].arrays[key], outs[1].arrays[key]), key


def test_threaded_poisson_mesh_agrees_to_rounding():
    """With several solver threads the mesh's vertices may come in another order and differ in
    the last digits (open3d's parallel sums), which can flip a marching-cubes tie (a face more
    or less): the same surface, not the same arrays."""
    from scipy.spatial import cKDTree

    from geoprior.mesh import estimate_normals, poisson_mesh
    from geoprior.shapes import noisy_torus

    _, pts, _ = noisy_torus(n=3000, noise=0.0, seed=1, sections=(48, 24))
    normals = estimate_normals(pts)
    v1, f1 = poisson_mesh(pts, normals, depth=6, threads=1)
    v2, f2 = poisson_mesh(pts, normals, depth=6, threads=2)
    assert abs(len(f1) - len(f2)) <= 1e-3 * len(f1)
    assert cKDTree(v1).query(v2)[0].max() < 1e-5 and cKDTree(v2).query(v1)[0].max() < 1e-5


def test_neural_eit_is_reproducible():
    from eit.methods import make_reconstructor
    from eit.problem import simulated_problem

    problem = simulated_problem("two-inclusion", "1500", 0.01, seed=0, level=1)
    outs = []
    for k in range(2):
        _scramble_global_generators(k)
        outs.append(make_reconstructor("neural", iterations=4, seed=5).reconstruct(problem))
    assert np.array_equal(outs[0].arrays["sigma"], outs[1].arrays["sigma"])
