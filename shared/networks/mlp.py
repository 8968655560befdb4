"""ReLU multilayer perceptrons: one network, or a batch of independent networks.

:class:`BatchedMLP` holds ``B`` independent MLPs with identical shapes and evaluates
them as one batched matrix product per layer::

    h^{l+1}_b = act( h^l_b  W^l_b + c^l_b ),   W^l in R^{B x d_l x d_{l+1}},  b = 1..B

Input ``(B, N, d_in)``, output ``(B, N, d_out)``.  Because the parameters of different
members never mix, a loss summed over the batch gives each member exactly the gradient it
would get alone, and Adam (elementwise) updates each member as if fitted alone: one
optimiser step fits all ``B`` networks.  This is how geoprior fits all patch charts.

**Blocked evaluation.** For a large batch the hidden activations (``B x N x width``
floats per layer) do not fit in cache, and on a CPU the elementwise work (bias, ReLU and
its backward) then runs at memory speed, slower than the matrix products.  With
``block=m`` the members are evaluated ``m`` at a time and, during backpropagation, each
block's forward pass is recomputed just before its backward pass (activation
checkpointing per block), so every block's activations stay in cache.  The results and
gradients are those of the plain evaluation (to rounding); first-order autograd only.
Blocking applies to CPU tensors only: on a GPU the whole batch in one launch per layer is
far faster (measured on an H200 with 551 charts x 809 samples: 16x more patch-iterations
per second unblocked; ``benchmarks/results/geoprior_throughput_cuda.json``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MLP", "BatchedMLP", "FourierFeatures", "activation"]


def activation(name: str) -> nn.Module:
    table = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh,
             "softplus": nn.Softplus, "silu": nn.SiLU, "elu": nn.ELU}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(table)}")
    return table[name]()


class MLP(nn.Module):
    """Plain MLP ``d_in -> hidden... -> d_out`` with an activation between layers.

    Input ``(..., d_in)``, output ``(..., d_out)``; no activation after the last layer.
    """

    def __init__(self, d_in: int, d_out: int, hidden: Sequence[int] = (128, 128, 128), act: str = "relu") -> None:
        super().__init__()
        dims = [d_in, *hidden, d_out]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(activation(act))
        self.net = nn.Sequential(*layers)
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BatchedMLP(nn.Module):
    """``B`` independent MLPs evaluated together (see the module docstring).

    Parameters are initialised per member as ``torch.nn.Linear`` does
    (uniform in ``+-1/sqrt(fan_in)``), so member ``b`` is distributed like a fresh ``MLP``.
    """

    def __init__(self, batch: int, d_in: int, d_out: int, hidden: Sequence[int] = (128, 128, 128),
                 act: str = "relu", block: int | None = None) -> None:
        super().__init__()
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if block is not None and block < 1:
            raise ValueError(f"block must be >= 1 or None, got {block}")
        self.batch = batch
        self.block = block
        self.dims = [d_in, *hidden, d_out]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(self.dims[:-1], self.dims[1:]):
            bound = 1.0 / math.sqrt(a)
            self.weights.append(nn.Parameter(torch.empty(batch, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(batch, 1, b).uniform_(-bound, bound)))
        self.act = activation(act)
        self._act_name = act

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Outputs ``(B, N, d_out)`` of input ``(B, N, d_in)``.

        ``lengths`` ``(B,)``: member ``b``'s rows ``>= lengths[b]`` are padding; they are
        not evaluated and their outputs are zero.  The blocked path then groups members
        of similar length and trims each block to its longest member, so a padded batch
        costs about its real rows.
        """
        if x.ndim != 3 or x.shape[0] != self.batch or x.shape[2] != self.dims[0]:
            raise ValueError(f"BatchedMLP expects input (B={self.batch}, N, {self.dims[0]}), got {tuple(x.shape)}")
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=x.device)
            if lengths.shape != (self.batch,) or bool((lengths < 0).any()) or bool((lengths > x.shape[1]).any()):
                raise ValueError(f"lengths must be ({self.batch},) integers in [0, {x.shape[1]}], "
                                 f"got shape {tuple(lengths.shape)}")
        params = [*self.weights, *self.biases]
        if self.block and self.batch > self.block and x.device.type == "cpu" and torch.is_grad_enabled():
            return _BlockedMLP.apply(x, self.act, _blocks(lengths, self.batch, self.block, x.shape[1]), *params)
        out = _mlp_forward(x, self.act, params)
        if lengths is not None:
            out = out * (torch.arange(x.shape[1], device=x.device) < lengths[:, None])[..., None]
        return out

    def member(self, b: int) -> MLP:
        """Member ``b`` as a stand-alone :class:`MLP` with copied weights."""
        mlp = MLP(self.dims[0], self.dims[-1], self.dims[1:-1], self._act_name)
        linears = [m for m in mlp.net if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for lin, w, c in zip(linears, self.weights, self.biases):
                lin.weight.copy_(w[b].T)
                lin.bias.copy_(c[b, 0])
        return mlp


def _mlp_forward(x: Tensor, act: nn.Module, params: Sequence[Tensor]) -> Tensor:
    """The batched MLP on ``x`` ``(B, N, d)`` with ``params = [W_1..W_L, c_1..c_L]``."""
    L = len(params) // 2
    for i in range(L):
        x = torch.baddbmm(params[L + i], x, params[i])
        if i < L - 1:
            x = act(x)
    return x


def _blocks(lengths: Tensor | None, batch: int, block: int, n: int) -> list[tuple[Tensor | slice, int, Tensor | None]]:
    """Blocks of ``block`` members as (members, rows, real): consecutive members without
    ``lengths``; else members sorted by length, each block trimmed to its longest, with
    ``real`` ``(m, rows, 1)`` marking the rows below each member's length."""
    if lengths is None:
        return [(slice(s, s + block), n, None) for s in range(0, batch, block)]
    order = torch.argsort(lengths.cpu(), stable=True).to(lengths.device)
    blocks = []
    for s in range(0, batch, block):
        members = order[s:s + block]
        rows = int(lengths[members].max())
        real = (torch.arange(rows, device=lengths.device) < lengths[members, None])[..., None]
        blocks.append((members, rows, real))
    return blocks


class _BlockedMLP(torch.autograd.Function):
    """:func:`_mlp_forward` over blocks of members, recomputing each block in the backward pass.

    ``blocks`` is a list of (members, rows, real): an index or slice of members, the number
    of leading rows evaluated for them, and None or a mask of their real rows (padding
    rows: zero output, no gradient).
    """

    @staticmethod
    def forward(ctx, x: Tensor, act: nn.Module, blocks: list, *params: Tensor) -> Tensor:
        ctx.act, ctx.blocks = act, blocks
        ctx.save_for_backward(x, *params)
        out = x.new_zeros(x.shape[0], x.shape[1], params[len(params) // 2 - 1].shape[-1])
        with torch.no_grad():
            for members, rows, real in blocks:
                y = _mlp_forward(x[members, :rows], act, [p[members] for p in params])
                out[members, :rows] = y if real is None else y * real
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, *params = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        need_p = any(ctx.needs_input_grad[3:])
        grad_x = torch.zeros_like(x) if need_x else None
        grad_p = [torch.zeros_like(p) for p in params] if need_p else None
        for members, rows, real in ctx.blocks:
            with torch.enable_grad():
                xb = x[members, :rows].detach().requires_grad_(need_x)
                pb = [p[members].detach().requires_grad_(need_p) for p in params]
                out = _mlp_forward(xb, ctx.act, pb)
                wrt = ([xb] if need_x else []) + (pb if need_p else [])
                g_out = grad_out[members, :rows]
                grads = torch.autograd.grad(out, wrt, g_out if real is None else g_out * real)
            if need_x:
                grad_x[members, :rows] = grads[0]
            if need_p:
                for g, gb in zip(grad_p, grads[1:] if need_x else grads):
                    g[members] = gb
        return (grad_x, None, None, *(grad_p if need_p else [None] * len(params)))


class FourierFeatures(nn.Module):
    """Random Fourier features ``x -> [cos(2 pi x B), sin(2 pi x B)]`` (Tancik et al. 2020).

    ``B`` is a fixed ``(d_in, n_features)`` Gaussian matrix of standard deviation
    ``scale`` (in cycles per unit of ``x``); output dimension ``2 n_features``.
    Coordinate MLPs with these features can represent sharper structure than plain ReLU
    MLPs, whose spectral bias favours low frequencies.
    """

    def __init__(self, d_in: int, n_features: int = 64, scale: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.register_buffer("B", torch.randn(d_in, n_features, generator=generator) * scale)
        self.out_dim = 2 * n_features

    def forward(self, x: Tensor) -> Tensor:
        proj = 2 * math.pi * x @ self.B
        return torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1)
