"""Two-layer over-parameterised convolutional generator (Heckel & Soltanolkotabi, ICLR/ICML 2020).

    G(C) = ReLU(U C) v,       C in R^{n_c x k} (trainable),  v in {+-1/sqrt(k)}^k (fixed)

``U : R^{n_c} -> R^n`` is fixed: zero-insertion upsampling by ``s`` (``n = s n_c``; ``s = 1``
means none) followed by *circular* convolution with a fixed kernel ``u``.  Column ``c_j`` of
``C`` is one channel; ``G`` sums the rectified channels with alternating signs
``v_j = (-1)^j / sqrt(k)``.  Signals are 1-D (``n``) or 2-D images (``H x W``, ``U`` a 2-D
circular convolution with the separable kernel ``u u^T``).

Structure the analysis uses (exposed here for tests and experiments): the Jacobian
with respect to ``vec(C)`` is

    J(C) = [ v_1 D_1 U, ..., v_k D_k U ]  in R^{n x k n_c},   D_j = diag( 1{U c_j > 0} ),

and for ``C`` with i.i.d. Gaussian entries its expected Gram matrix is

    Sigma = E[J J^T] = (U U^T) .* ( 1/2 - arccos(rho) / (2 pi) ),
    rho_il = <u_i, u_l> / (|u_i| |u_l|)     (u_i the rows of U).

With ``s = 1``, ``U U^T`` and ``rho`` are circulant, so ``Sigma`` is circulant: its
eigenvectors are the trigonometric (Fourier) vectors, and its eigenvalues decay with
frequency for a smooth kernel.  Gradient descent therefore fits the low-frequency
components of a signal first -- the "structural bias" that makes early-stopped fits
denoise.  :meth:`ConvGenerator.jacobian` and :meth:`ConvGenerator.expected_gram` give both
matrices densely (small ``n`` only).

The network has no input: call it as ``G()`` (``shared.fit.fit(G, None, y, ...)``); any
argument given is ignored.  Output ``(1, n)`` for 1-D and ``(1, 1, H, W)`` for 2-D.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ConvGenerator", "generator_kernel"]


def generator_kernel(kind: str, width: float, length: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """1-D circular kernel of ``length`` taps centred at index 0, unit l2 norm.

    ``'gaussian'``: ``exp(-t^2 / (2 width^2))``; ``'triangle'``: ``max(0, 1 - |t| / width)``
    (linear interpolation for upsampling by ``width``); ``t`` is the circular offset.
    """
    if width <= 0:
        raise ValueError(f"kernel width must be positive, got {width}")
    idx = torch.arange(length, dtype=dtype)
    t = torch.minimum(idx, length - idx)  # circular distance to tap 0
    if kind == "gaussian":
        u = torch.exp(-t**2 / (2 * width**2))
    elif kind == "triangle":
        u = torch.clamp(1 - t / width, min=0)
    else:
        raise ValueError(f"kernel must be 'gaussian', 'triangle' or a tensor, got {kind!r}")
    return u / u.norm()


class ConvGenerator(nn.Module):
    """``G(C) = ReLU(U C) v`` (module docstring).

    Parameters
    ----------
    shape:
        Output length ``n`` (1-D) or ``(H, W)`` (2-D).
    k:
        Number of channels (columns of ``C``); over-parameterised when ``k n_c >= n``.
    upsample:
        Zero-insertion factor ``s`` (each output size must be divisible by it).
    kernel, width:
        ``'gaussian'`` (``width`` = standard deviation in samples) or ``'triangle'``
        (``width`` = half-width), or a 1-D tensor of ``n`` (or ``H`` = ``W``) circular taps
        centred at index 0.
    init_std:
        Entries of ``C`` at initialisation are ``N(0, init_std^2)``.
    generator:
        Torch generator for the initialisation (determinism).
    """

    def __init__(self, shape: int | Sequence[int], k: int = 64, upsample: int = 1,
                 kernel: str | Tensor = "gaussian", width: float = 1.5, init_std: float = 1.0,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
        if len(shape) not in (1, 2) or any(s < 1 for s in shape):
            raise ValueError(f"shape must be n or (H, W) with positive sizes, got {shape}")
        if k < 1 or upsample < 1:
            raise ValueError(f"k and upsample must be >= 1, got {k}, {upsample}")
        if any(s % upsample for s in shape):
            raise ValueError(f"output sizes {shape} must be divisible by upsample={upsample}")
        self.shape, self.k, self.s, self.dim = shape, k, upsample, len(shape)
        self.coarse = tuple(s // upsample for s in shape)
        kernels = []
        for n in shape:
            if isinstance(kernel, Tensor):
                u = kernel.detach().to(torch.float64).flatten()
                if u.numel() != n:
                    raise ValueError(f"kernel tensor must have {n} taps, got {u.numel()}")
            else:
                u = generator_kernel(kernel, width, n)
            kernels.append(u)
        # Transfer function of the (separable) circular convolution, kept in float64 precision
        # as a real-FFT of the full kernel.
        if self.dim == 1:
            full = kernels[0]
        else:
            full = kernels[0][:, None] * kernels[1][None, :]
        self.register_buffer("kernel", full.to(dtype))
        v = torch.tensor([(-1.0) ** j for j in range(k)], dtype=dtype) / math.sqrt(k)
        self.register_buffer("v", v)
        self.C = nn.Parameter(torch.randn(k, *self.coarse, generator=generator, dtype=dtype) * init_std)

    def _upsample(self, c: Tensor) -> Tensor:
        if self.s == 1:
            return c
        out = c.new_zeros(c.shape[0], *self.shape)
        if self.dim == 1:
            out[:, ::self.s] = c
        else:
            out[:, ::self.s, ::self.s] = c
        return out

    def apply_U(self, c: Tensor) -> Tensor:
        """``U c`` for a batch of coarse signals ``c`` of shape ``(B, *coarse)`` -> ``(B, *shape)``."""
        x = self._upsample(c)
        dims = tuple(range(-self.dim, 0))
        K = torch.fft.rfftn(self.kernel.to(x.dtype), dim=dims)
        return torch.fft.irfftn(torch.fft.rfftn(x, dim=dims) * K, s=self.shape, dim=dims)

    def forward(self, *unused) -> Tensor:
        h = torch.relu(self.apply_U(self.C))               # (k, *shape)
        g = torch.tensordot(self.v.to(h.dtype), h, dims=1)  # (*shape)
        return g[None] if self.dim == 1 else g[None, None]

    # -- structure used by the analysis ------------------------------------------------------
    @property
    def n(self) -> int:
        return math.prod(self.shape)

    @property
    def n_coarse(self) -> int:
        return math.prod(self.coarse)

    def U_matrix(self) -> Tensor:
        """``U`` as a dense ``(n, n_c)`` matrix (column ``i`` = ``U e_i``; flattening row-major)."""
        eye = torch.eye(self.n_coarse, dtype=self.C.dtype, device=self.C.device).reshape(-1, *self.coarse)
        return self.apply_U(eye).reshape(self.n_coarse, self.n).T

    @torch.no_grad()
    def jacobian(self, C: Tensor | None = None) -> Tensor:
        """``J(C) = [v_1 D_1 U, ..., v_k D_k U]`` as a dense ``(n, k n_c)`` matrix.

        Column ``j n_c + i`` is the derivative of ``G`` (flattened) with respect to
        ``C[j]`` flattened at coarse position ``i`` (row-major), i.e. ``vec`` of ``self.C``.
        ``C`` defaults to the current parameters.  At ``U c_j = 0`` exactly the derivative of
        ReLU is taken as 0 (as autograd does).
        """
        C = self.C if C is None else C
        U = self.U_matrix()                                             # (n, n_c)
        active = (self.apply_U(C).reshape(self.k, self.n) > 0).to(U.dtype)  # (k, n)
        blocks = self.v[:, None, None] * active[:, :, None] * U[None]  # (k, n, n_c)
        return blocks.permute(1, 0, 2).reshape(self.n, self.k * self.n_coarse)

    @torch.no_grad()
    def expected_gram(self) -> Tensor:
        """``Sigma = E_C[J J^T] = (U U^T) .* (1/2 - arccos(rho)/(2 pi))`` (``(n, n)``, float64)."""
        U = self.U_matrix().to(torch.float64)
        G = U @ U.T
        d = torch.sqrt(torch.clamp(torch.diagonal(G), min=1e-300))
        rho = torch.clamp(G / (d[:, None] * d[None, :]), -1.0, 1.0)
        return G * (0.5 - torch.arccos(rho) / (2 * math.pi))
