"""Hourglass / skip net, deep decoder and the two-layer convolutional generator."""
import math

import pytest
import torch

from shared.networks import (ConvGenerator, DeepDecoder, Hourglass, count_parameters,
                             deep_decoder_parameter_count, get_noise_input, required_multiple,
                             skip_light, skip_official)


def _hourglass_count_by_hand(in_ch, out_ch, d, u, s, kd=3, ku=3, ks=1):
    """Parameter count of the skip net written out layer by layer (conv weights+bias, BN 2C)."""
    n, total, c_in = len(d), 0, in_ch
    for i in range(n):
        conv = lambda a, b, k: a * b * k * k + b
        bn = lambda c: 2 * c
        if s[i]:
            total += conv(c_in, s[i], ks) + bn(s[i])
        total += conv(c_in, d[i], kd) + bn(d[i]) + conv(d[i], d[i], kd) + bn(d[i])
        k_deep = u[i + 1] if i < n - 1 else d[i]
        total += bn(s[i] + k_deep) + conv(s[i] + k_deep, u[i], ku) + bn(u[i]) + conv(u[i], u[i], 1) + bn(u[i])
        c_in = d[i]
    return total + conv(u[0], out_ch, 1)


def test_official_skip_parameter_count():
    net = skip_official(32, 3)
    # 2,217,831 is the count of the authors' skip(32, 3, [128]*5, [128]*5, [4]*5) network
    # ("~2.2M" in the literature); it must also agree with the layer-by-layer formula.
    assert count_parameters(net) == 2_217_831
    assert count_parameters(net) == _hourglass_count_by_hand(32, 3, [128] * 5, [128] * 5, [4] * 5)
    assert required_multiple(net) == 32


def test_configurable_hourglass_counts_and_shapes():
    cfg = dict(channels_down=(8, 16, 16), channels_up=(8, 12, 16), channels_skip=(0, 2, 3))
    net = Hourglass(4, 1, **cfg, kernel_down=5, upsample="nearest", pad="zero", sigmoid=False)
    assert count_parameters(net) == _hourglass_count_by_hand(4, 1, [8, 16, 16], [8, 12, 16], [0, 2, 3], kd=5)
    out = net(torch.randn(2, 4, 16, 24))
    assert out.shape == (2, 1, 16, 24)
    assert out.min() < 0 or out.max() > 1  # no sigmoid


def test_skip_official_and_light_forward_shapes_and_range():
    z = get_noise_input(32, 64, 96, generator=torch.Generator().manual_seed(0))
    assert z.shape == (1, 32, 64, 96) and 0 <= z.min() and z.max() <= 0.1
    for net in (skip_official(), skip_light(out_ch=1)):
        out = net(z)
        assert out.shape == (1, net.out_ch, 64, 96)
        assert 0 < out.min() and out.max() < 1


def test_hourglass_rejects_bad_sizes():
    net = skip_light()
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.rand(1, 32, 40, 64))
    with pytest.raises(ValueError, match="expects input"):
        net(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="same"):
        Hourglass(channels_down=(8, 8), channels_up=(8,), channels_skip=(4, 4))
    with pytest.raises(ValueError, match="pad"):
        Hourglass(pad="circular")


def test_hourglass_init_is_deterministic_under_a_seed():
    z = get_noise_input(32, 64, 64, generator=torch.Generator().manual_seed(1))
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        outs.append(skip_light()(z))
    torch.manual_seed(124)
    other = skip_light()(z)
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(outs[0], other)


def test_noise_input_kinds():
    g = torch.Generator().manual_seed(0)
    a = get_noise_input(3, 8, 8, generator=g)
    b = get_noise_input(3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    m = get_noise_input(2, 4, 5, kind="meshgrid")
    assert m.shape == (1, 2, 4, 5) and m[0, 0, 0, -1] == 1 and m[0, 1, -1, 0] == 1
    with pytest.raises(ValueError, match="2 channels"):
        get_noise_input(3, 4, 4, kind="meshgrid")


@pytest.mark.parametrize("k,d,out", [(64, 6, 3), (16, 3, 1), (128, 5, 3)])
def test_deep_decoder_parameter_count_and_shape(k, d, out):
    dd = DeepDecoder(k, d, out)
    assert count_parameters(dd) == deep_decoder_parameter_count(k, d, out) == d * (k * k + 2 * k) + out * k
    shape = dd.input_shape(64, 96)
    assert shape == (1, k, 64 // 2 ** (d - 1), 96 // 2 ** (d - 1))
    y = dd(get_noise_input(k, *shape[2:]))
    assert y.shape == (1, out, 64, 96) and 0 < y.min() and y.max() < 1


def test_deep_decoder_is_underparameterised_at_k64():
    assert deep_decoder_parameter_count(64, 6, 3) == 25_536 < 3 * 256 * 256 / 7
    with pytest.raises(ValueError, match="multiples of 32"):
        DeepDecoder(64, 6).input_shape(100, 100)


def test_conv_generator_jacobian_matches_autograd():
    g = ConvGenerator(32, k=6, upsample=2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    f = lambda C: torch.tensordot(g.v, torch.relu(g.apply_U(C)), dims=1)
    J_auto = torch.autograd.functional.jacobian(f, g.C.detach()).reshape(32, -1)
    assert torch.allclose(g.jacobian(), J_auto, atol=1e-12)
    assert g().shape == (1, 32)
    g2 = ConvGenerator((8, 12), k=3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    f2 = lambda C: torch.tensordot(g2.v, torch.relu(g2.apply_U(C)), dims=1)
    J2 = torch.autograd.functional.jacobian(f2, g2.C.detach()).reshape(96, -1)
    assert torch.allclose(g2.jacobian(), J2, atol=1e-12)
    assert g2().shape == (1, 1, 8, 12)


def test_conv_generator_leading_singular_vectors_are_trigonometric():
    n = 64
    g = ConvGenerator(n, k=256, width=1.5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    U, S, _ = torch.linalg.svd(g.jacobian(), full_matrices=False)
    t = torch.arange(n, dtype=torch.float64)
    basis = [torch.ones(n, dtype=torch.float64)]
    basis += [f(2 * math.pi * q * t / n) for q in (1, 2, 3) for f in (torch.cos, torch.sin)]
    Q, _ = torch.linalg.qr(torch.stack(basis, 1))  # frequencies 0..3
    energy = (Q.T @ U[:, :5]).norm(dim=0) ** 2
    assert energy.min() > 0.9, energy
    # A high-frequency-heavy direction carries far less: the last singular vectors are not low-pass.
    assert (Q.T @ U[:, -5:]).norm(dim=0).max() ** 2 < 0.2
    # Expected Gram: circulant, Fourier eigenvectors, close to the sample J J^T for large k.
    sigma = g.expected_gram()
    assert torch.allclose(sigma, torch.roll(torch.roll(sigma, 1, 0), 1, 1), atol=1e-12)
    J = g.jacobian()
    assert (J @ J.T - sigma).norm() / sigma.norm() < 0.15
    assert (S[0] ** 2 - torch.linalg.eigvalsh(sigma)[-1]).abs() / S[0] ** 2 < 0.1


def test_conv_generator_deterministic_and_validates():
    a = ConvGenerator(16, 4, generator=torch.Generator().manual_seed(3))
    b = ConvGenerator(16, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a(), b())
    with pytest.raises(ValueError, match="divisible"):
        ConvGenerator(15, 4, upsample=2)
    with pytest.raises(ValueError, match="kernel"):
        ConvGenerator(16, 4, kernel="box")


def test_hourglass_rejects_too_small_input():
    with pytest.raises(ValueError, match="too small"):
        skip_light()(torch.rand(1, 32, 32, 32))
