"""geoprior on a GPU: the pipeline runs with ``device="cuda"`` and agrees with the CPU run.

Skipped without CUDA (CI has none); run on a GPU machine with
``python -m pytest tests/test_geoprior_gpu.py``.  Needs no open3d (normals are given and
no mesh is made).
"""
import numpy as np
import pytest
import torch

from geoprior import DeepGeometricPrior
from shared.networks import BatchedMLP

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _noisy_sphere(n=600, seed=7):
    rng = np.random.default_rng(seed)
    clean = rng.standard_normal((n, 3))
    clean /= np.linalg.norm(clean, axis=1, keepdims=True)
    diag = float(np.linalg.norm(clean.max(0) - clean.min(0)))
    return clean, clean + 0.01 * diag * rng.standard_normal(clean.shape), diag


@cuda
def test_reconstruct_on_cuda_denoises_like_the_cpu():
    clean, noisy, diag = _noisy_sphere()
    normals = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    # Distance to the unit sphere is exact: | |p| - 1 |, averaged over the points.
    radial = lambda p: float(np.abs(np.linalg.norm(p, axis=1) - 1).mean())  # noqa: E731
    before = radial(noisy)  # about 0.027
    after = {}
    for device in ("cpu", "cuda"):
        rec = DeepGeometricPrior(radius=0.12, hidden=(32, 32), iterations=150, consistency_iterations=40,
                                 density=3, mesh=False, device=device)
        res = rec.reconstruct(noisy, normals)
        points = res.arrays["points"]
        assert np.isfinite(points).all() and np.isfinite(res.arrays["normals"]).all()
        after[device] = radial(points)  # about 0.014 on the CPU
    assert after["cuda"] < 0.7 * before
    assert abs(after["cuda"] - after["cpu"]) < 0.2 * after["cpu"]


@cuda
def test_batched_mlp_is_unblocked_on_cuda_with_the_same_gradients():
    torch.manual_seed(0)
    net = BatchedMLP(40, 2, 3, hidden=(16, 16), block=8)
    x = torch.rand(40, 50, 2)
    net(x).square().sum().backward()
    cpu_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net = net.cuda()
    net(x.cuda()).square().sum().backward()
    for g, p in zip(cpu_grads, net.parameters()):
        assert torch.allclose(g, p.grad.cpu(), atol=1e-4, rtol=1e-4)
