import torch

from shared.networks import BatchedMLP, FourierFeatures
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


@pytest.mark.parametrize("block", [1, 3, 4])
def test_blocked_batched_mlp_matches_plain_values_and_gradients(block):
    torch.manual_seed(0)
    plain = BatchedMLP(7, 2, 3, hidden=(16, 8))
    blocked = BatchedMLP(7, 2, 3, hidden=(16, 8), block=block)
    blocked.load_state_dict(plain.state_dict())
    x = torch.rand(7, 11, 2, requires_grad=True)
    xb = x.detach().clone().requires_grad_(True)
    w = torch.randn(7, 11, 3)
    (plain(x) * w).sum().backward()
    out = blocked(xb)
    (out * w).sum().backward()
    assert torch.allclose(out, plain(x), atol=1e-6)
    assert torch.allclose(xb.grad, x.grad, atol=1e-6)
    for p, q in zip(plain.parameters(), blocked.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5)
    # Without autograd (sampling) the plain path runs; the result is the same.
    with torch.no_grad():
        assert torch.allclose(blocked(x), plain(x), atol=1e-6)


@pytest.mark.parametrize("block", [None, 1, 3])
def test_lengths_skip_padding_rows_with_the_gradients_of_the_real_rows(block):
    """Members of different lengths: outputs on the real rows and all gradients equal the
    plain evaluation with the padding masked out; padding outputs are zero."""
    torch.manual_seed(0)
    plain = BatchedMLP(7, 2, 3, hidden=(16, 8))
    net = BatchedMLP(7, 2, 3, hidden=(16, 8), block=block)
    net.load_state_dict(plain.state_dict())
    assert_blocked_matches_plain(plain, net, torch.tensor([11, 2, 7, 0, 5, 11, 3]), 11)


def assert_blocked_matches_plain(plain, net, lengths, k):
    """``net(x, lengths)`` equals ``plain(x)`` on the real rows, and so do the gradients of
    a weighted sum w.r.t. the input and every parameter (``x`` ``(len(lengths), k, 2)``)."""
    real = (torch.arange(k) < lengths[:, None])[..., None]
    x = torch.rand(len(lengths), k, 2, requires_grad=True)
    xb = x.detach().clone().requires_grad_(True)
    w = torch.randn(len(lengths), k, 3)
    (plain(x) * real * w).sum().backward()
    out = net(xb, lengths)
    (out * w).sum().backward()
    assert torch.allclose(out, plain(x) * real, atol=1e-6)
    assert torch.allclose(xb.grad, x.grad, atol=1e-6)
    for p, q in zip(plain.parameters(), net.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5)


def test_lengths_are_checked():
    net = BatchedMLP(3, 2, 3, hidden=(4,), block=2)
    with pytest.raises(ValueError, match="lengths"):
        net(torch.rand(3, 5, 2), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="lengths"):
        net(torch.rand(3, 5, 2), torch.tensor([1, 2, 6]))


def test_blocked_batched_mlp_rejects_bad_block():
    with pytest.raises(ValueError, match="block"):
        BatchedMLP(2, 2, 3, block=0)


def test_held_members_return_their_kept_rows_with_zero_gradient():
    """A held member is evaluated once more, then served from its kept rows (a change of its
    parameters no longer shows: it is not evaluated); the others match the plain network,
    values and gradients; a changed input evaluates it again; None releases."""
    torch.manual_seed(0)
    net = BatchedMLP(9, 2, 3, hidden=(16, 8), block=2)
    x, lengths = torch.rand(9, 11, 2), torch.tensor([11, 4, 7, 11, 2, 9, 11, 5, 8])
    plain = net(x, lengths).detach()
    held = torch.zeros(9, dtype=torch.bool)
    held[[1, 4, 6]] = True
    net.hold_members(held)
    assert torch.equal(net(x, lengths), plain)  # the held members' rows are kept here
    with torch.no_grad():
        for p in (*net.weights, *net.biases):
            p[held] += 1.0  # breaks the promise on purpose: shows that they are not evaluated
    w = torch.randn(9, 11, 3)
    out = net(x, lengths)
    assert torch.equal(out[held], plain[held])
    (out * w).sum().backward()
    grads = [p.grad.clone() for p in (*net.weights, *net.biases)]
    assert all(bool((g[held] == 0).all()) for g in grads)
    ref = BatchedMLP(9, 2, 3, hidden=(16, 8), block=2)
    ref.load_state_dict(net.state_dict())
    (ref(x, lengths) * w).sum().backward()
    for g, p in zip(grads, (*ref.weights, *ref.biases)):
        assert torch.allclose(g[~held], p.grad[~held], atol=1e-6)
    moved = x.clone()
    moved[1] += 0.1
    assert not torch.allclose(net(moved, lengths)[1], plain[1])  # a changed input: evaluated again
    net.hold_members(None)
    assert not torch.allclose(net(x, lengths)[held], plain[held])


def test_hold_members_checks_its_mask():
    with pytest.raises(ValueError, match="boolean mask of shape"):
        BatchedMLP(4, 2, 3, block=2).hold_members(torch.ones(3, dtype=torch.bool))
