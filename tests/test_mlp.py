import torch

from shared.networks import MLP, BatchedMLP, FourierFeatures
import pytest


def test_batched_mlp_equals_its_members():
    torch.manual_seed(0)
    net = BatchedMLP(5, 2, 3, hidden=(16, 8))
    x = torch.rand(5, 7, 2)
    out = net(x)
    assert out.shape == (5, 7, 3)
    for b in range(5):
        assert torch.allclose(net.member(b)(x[b]), out[b], atol=1e-6)


def test_batched_mlp_parameter_count():
    net = BatchedMLP(4, 2, 3, hidden=(10,))
    assert sum(p.numel() for p in net.parameters()) == 4 * ((2 * 10 + 10) + (10 * 3 + 3))


def test_batched_mlp_rejects_wrong_input():
    with pytest.raises(ValueError, match="expects input"):
        BatchedMLP(2, 2, 3)(torch.rand(3, 5, 2))


def test_fourier_features_shape():
    ff = FourierFeatures(2, 16, scale=3.0, generator=torch.Generator().manual_seed(0))
    assert ff(torch.rand(10, 2)).shape == (10, 32)
