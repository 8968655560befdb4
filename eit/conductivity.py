"""Neural conductivities: untrained networks whose output is a positive conductivity per cell.

Both priors output ``sigma (C,)`` (S/m, float64) at the ``C`` cell centroids of the
inversion mesh, positive by construction around the background::

    sigma = sigma_bg * exp( clamp(s_theta(x), -s_max, s_max) )

so ``s = log(sigma / sigma_bg)`` is the log-contrast the network produces and ``s = 0``
(water) is its value at initialisation (the last layer starts at zero).

* :class:`MLPConductivity`: a coordinate MLP on random Fourier features,
  ``s(x) = MLP([cos 2 pi B x/R, sin 2 pi B x/R])`` (:class:`shared.networks.FourierFeatures`,
  :class:`shared.networks.MLP`); input: the centroids ``x (C, 2)`` (the ``z`` of
  :func:`shared.fit.fit`).  With ``members = K > 1`` it is an ensemble of ``K`` such networks,
  each with its own features and weights (:class:`shared.networks.BatchedMLP`), evaluated in
  one pass: output ``(K, C)``, fitted together (the data term and TV average over members).
  ``head="phase"`` makes it a soft three-phase image instead (water, resistive, conductive):
  the MLP gives three logits ``a(x)``, ``p = softmax(a)`` and
  ``s(x) = p_res(x) v_res + p_con(x) v_con`` with fitted phase values ``v_res = -exp(r_res) < 0``
  and ``v_con = exp(r_con) > 0`` (one pair per member).  A piecewise-constant conductivity
  with fitted contrasts is then what the network produces most easily; the water logit starts
  ``water_bias`` above the others and ``|v_res| = |v_con|``, so ``s = 0`` at initialisation.
* :class:`GridConductivity`: a convolutional generator on a pixel grid covering the tank
  (the deep decoder of :mod:`shared.networks.deep_decoder`, fixed random input), sampled at
  the cell centroids by bilinear interpolation (``grid_sample``); the grid's row 0 is the
  top (largest ``y``), as on the KTC pixel grid.  Its input is the fixed noise tensor.
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.networks import MLP, BatchedMLP, DeepDecoder, FourierFeatures

__all__ = ["MLPConductivity", "GridConductivity", "make_prior", "HEADS"]

#: output heads of :class:`MLPConductivity`
HEADS = ("log", "phase")


class _Positive(nn.Module):
    def __init__(self, sigma_bg: float, s_max: float) -> None:
        super().__init__()
        if not sigma_bg > 0:
            raise ValueError(f"background conductivity must be positive, got {sigma_bg}")
        self.sigma_bg = float(sigma_bg)
        self.s_max = float(s_max)

    def clamp(self, s: Tensor) -> Tensor:
        """The log-contrast within ``+-s_max``: a smooth clamp (tanh) keeps gradients alive near the bound."""
        return self.s_max * torch.tanh(s / self.s_max)

    def to_sigma(self, s: Tensor) -> Tensor:
        return self.sigma_bg * torch.exp(self.clamp(s).to(torch.float64))


class MLPConductivity(_Positive):
    """Coordinate MLP with Fourier features (module docstring).

    Parameters
    ----------
    sigma_bg: background conductivity (S/m).
    radius: the domain's radius (m); coordinates are divided by it.
    n_features, scale: Fourier features (``scale`` in cycles per radius).
    hidden, act: the MLP.
    s_max: bound of the log-contrast (``sigma`` within ``sigma_bg e^{+-s_max}``).
    head: ``"log"`` (the MLP's output is the log-contrast) or ``"phase"`` (three soft phases
        with fitted values, module docstring); ``phase_contrast`` is ``|v|`` at the start (5:
        about 3.4 after the clamp, a 30-fold contrast; the values move little during a fit, so
        the start matters: on the simulated tuning split 5 scored 0.668, 8 0.669, and 2 only
        0.563 even with a 10x larger step for the values)
        and ``water_bias`` the water logit's head start.
    """

    def __init__(self, sigma_bg: float, radius: float, n_features: int = 64, scale: float = 1.5,
                 hidden=(128, 128, 128), act: str = "relu", s_max: float = 4.0, seed: int = 0,
                 members: int = 1, head: str = "log", phase_contrast: float = 5.0, water_bias: float = 2.0) -> None:
        super().__init__(sigma_bg, s_max)
        if int(members) != members or members < 1:
            raise ValueError(f"members must be an integer >= 1, got {members}")
        if head not in HEADS:
            raise ValueError(f"unknown output head {head!r}; choose from {', '.join(HEADS)}")
        if not phase_contrast > 0:
            raise ValueError(f"phase_contrast must be positive, got {phase_contrast}")
        g = torch.Generator().manual_seed(seed)
        self.radius = float(radius)
        self.members = int(members)
        self.head = head
        out = 3 if head == "phase" else 1
        if self.members == 1:
            self.features = FourierFeatures(2, n_features, scale, generator=g)
            self.mlp = MLP(self.features.out_dim, out, hidden, act)
            last = [self.mlp.net[-1].weight, self.mlp.net[-1].bias]
        else:
            # One Fourier matrix per member (K, 2, F): members differ in features and weights.
            self.register_buffer("B", torch.randn(self.members, 2, n_features, generator=g) * scale)
            self.mlp = BatchedMLP(self.members, 2 * n_features, out, hidden, act)
            last = [self.mlp.weights[-1], self.mlp.biases[-1]]
        for w in last:  # the last layer starts at zero: every member starts from water
            nn.init.zeros_(w)
        if head == "phase":
            shape = (2,) if self.members == 1 else (self.members, 1, 2)
            # log |v| of the resistive and conductive phases, fitted with the weights
            self.phase_log_values = nn.Parameter(torch.full(shape, float(np.log(phase_contrast))))
            self.register_buffer("phase_bias", torch.tensor([float(water_bias), 0.0, 0.0]))

    def _head(self, a: Tensor) -> Tensor:
        """The log-contrast from the MLP's last layer ``a (..., C, 1 or 3)``."""
        if self.head == "log":
            return a.squeeze(-1)
        p = torch.softmax(a + self.phase_bias, dim=-1)
        v = torch.exp(self.phase_log_values)
        return p[..., 2] * v[..., 1] - p[..., 1] * v[..., 0]

    def phase_values(self) -> Tensor:
        """The log-contrasts ``(v_res, v_con)`` of the pure phases as ``sigma`` shows them (after
        the smooth clamp), ``(2,)`` or ``(K, 2)`` for an ensemble; for ``head="phase"``."""
        if self.head != "phase":
            raise ValueError("phase_values() is for head='phase'")
        v = self.clamp(torch.exp(self.phase_log_values.detach().cpu()).reshape(-1, 2) * torch.tensor([-1.0, 1.0]))
        return v[0] if self.members == 1 else v

    def log_contrast(self, x: Tensor) -> Tensor:
        """``s (C,)``, or ``(K, C)`` for an ensemble, at the points ``x (C, 2)`` (m)."""
        if self.members == 1:
            return self._head(self.mlp(self.features(x / self.radius)))
        proj = 2 * torch.pi * torch.einsum("cd,kdf->kcf", x / self.radius, self.B)
        return self._head(self.mlp(torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.to_sigma(self.log_contrast(x))

    def member(self, k: int) -> MLPConductivity:
        """Member ``k`` of an ensemble as a stand-alone network (copied weights, same output)."""
        if self.members == 1:
            raise ValueError("member() is for an ensemble (members > 1)")
        net = MLPConductivity(self.sigma_bg, self.radius, self.B.shape[2], 1.0, tuple(self.mlp.dims[1:-1]),
                              self.mlp._act_name, self.s_max, head=self.head)
        with torch.no_grad():
            net.features.B.copy_(self.B[k])
            if self.head == "phase":
                net.phase_log_values.copy_(self.phase_log_values[k].reshape(2))
                net.phase_bias.copy_(self.phase_bias)
        net.mlp = self.mlp.member(k).to(self.B.device)
        return net


class GridConductivity(_Positive):
    """Deep-decoder image on a ``size x size`` grid over ``[-R, R]^2`` sampled at the cells.

    Parameters
    ----------
    sigma_bg, radius, s_max: as :class:`MLPConductivity`.
    centroids: ``(C, 2)`` cell centroids (m) where the image is sampled.
    size: grid side (a multiple of ``2^(layers-1)``).
    k, layers: channels and layers of the deep decoder.
    """

    def __init__(self, sigma_bg: float, radius: float, centroids: np.ndarray, size: int = 64, k: int = 32,
                 layers: int = 4, s_max: float = 4.0, seed: int = 0) -> None:
        super().__init__(sigma_bg, s_max)
        self.decoder = DeepDecoder(k=k, layers=layers, out_ch=1, sigmoid=False)
        last = self.decoder.net[-1]
        nn.init.zeros_(last.weight)
        c = torch.as_tensor(np.asarray(centroids)[:, :2], dtype=torch.float32) / float(radius)
        # grid_sample: x -> width (left = -1), y -> height with -1 the top row; our row 0 is +y.
        self.register_buffer("where", torch.stack([c[:, 0], -c[:, 1]], dim=-1).view(1, 1, -1, 2))
        self.size = size
        g = torch.Generator().manual_seed(seed)
        self.input_shape = self.decoder.input_shape(size, size)
        self.register_buffer("z0", torch.rand(self.input_shape, generator=g) * 0.1)

    def image(self, z: Tensor | None = None) -> Tensor:
        """The log-contrast image ``(size, size)`` (row 0 at the top)."""
        return self.decoder(self.z0 if z is None else z)[0, 0]

    def forward(self, z: Tensor | None = None) -> Tensor:
        img = self.decoder(self.z0 if z is None else z)  # (1, 1, H, W)
        s = F.grid_sample(img, self.where, mode="bilinear", padding_mode="border", align_corners=False)
        return self.to_sigma(s.view(-1))


def make_prior(kind: str, problem, seed: int = 0, **kwargs) -> tuple[nn.Module, Tensor | None]:
    """The prior network and its fixed input for a problem: ``("mlp"|"conv", ...)``.

    The initial weights depend only on ``seed`` (drawn inside a forked RNG state, so the
    caller's random stream is left alone): the same seed gives the same reconstruction.
    """
    if kind not in ("mlp", "conv"):
        raise ValueError(f"unknown prior {kind!r}; choose 'mlp' or 'conv'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "mlp":
            net = MLPConductivity(problem.sigma_bg, problem.radius, seed=seed, **kwargs)
            return net, torch.as_tensor(problem.centroids, dtype=torch.float32)
        net = GridConductivity(problem.sigma_bg, problem.radius, problem.centroids, seed=seed, **kwargs)
        return net, net.z0
