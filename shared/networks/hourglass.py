"""The deep image prior hourglass / skip U-Net (Ulyanov, Vedaldi & Lempitsky, CVPR 2018).

Architecture (one scale ``i = 0 .. S-1``, recursively nested; ``d_i`` down channels,
``u_i`` up channels, ``s_i`` skip channels, ``c_in`` the channels entering scale ``i``)::

    x (c_in, H, W)
    |-- skip   (if s_i > 0): conv k_skip x k_skip (c_in -> s_i) - BN - LeakyReLU(0.2)
    `-- deeper: conv k_down stride 2 (c_in -> d_i)  - BN - LReLU      # (d_i, H/2, W/2)
                conv k_down         (d_i -> d_i)    - BN - LReLU
                [scale i+1]                                          # (u_{i+1}, H/2, W/2)
                upsample x2 (bilinear or nearest)                    # (., H, W)
    concat(skip, deeper) - BN
    conv k_up (s_i + u_{i+1} -> u_i) - BN - LReLU                     # u_{S} := d_{S-1}
    [conv 1x1 (u_i -> u_i) - BN - LReLU]                             # need_1x1_up
    ... and after scale 0: conv 1x1 (u_0 -> out_ch) [- sigmoid]

This mirrors the layer order of the authors' ``skip`` network (stride-2 convolutions for
downsampling, batch normalisation after every convolution, the bilinear/nearest
upsampling on the deep branch before concatenation), so that the parameter count of the
official setting is the same.  Spatial sizes must be multiples of ``2**S``
(:func:`required_multiple`): the image front end pads to that.

Input: ``(N, in_ch, H, W)``; output ``(N, out_ch, H, W)``, in ``(0, 1)`` with the sigmoid.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Hourglass", "skip_official", "skip_light", "get_noise_input", "required_multiple",
           "count_parameters"]

_PADDINGS = ("reflection", "zero")
_UPSAMPLE = ("bilinear", "nearest")
_DOWNSAMPLE = ("stride", "avg", "max")


def count_parameters(net: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters of ``net`` (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, pad: str = "reflection", bias: bool = True,
          downsample: str = "stride", groups: int = 1) -> nn.Module:
    """``k x k`` convolution that keeps ``H x W`` (stride 1) or halves it (stride 2).

    Reflection padding (mirror without repeating the edge) pads ``(k-1)//2`` on each side,
    as the official code does; zero padding is the convolution's own.  With
    ``downsample='avg'|'max'`` the stride-2 convolution becomes a stride-1 convolution
    followed by 2x2 pooling.  ``groups``: ``c_in`` and ``c_out`` are ``groups`` blocks
    that do not mix (the members of an ensemble).
    """
    p = (k - 1) // 2
    layers: list[nn.Module] = []
    conv_stride = stride if downsample == "stride" else 1
    if pad == "reflection" and p > 0:
        layers.append(nn.ReflectionPad2d(p))
        layers.append(nn.Conv2d(c_in, c_out, k, conv_stride, padding=0, bias=bias, groups=groups))
    else:
        layers.append(nn.Conv2d(c_in, c_out, k, conv_stride, padding=p, bias=bias, groups=groups))
    if stride == 2 and downsample != "stride":
        layers.append(nn.AvgPool2d(2) if downsample == "avg" else nn.MaxPool2d(2))
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def _block(c_in: int, c_out: int, k: int, stride: int, pad: str, downsample: str = "stride",
           members: int = 1) -> list[nn.Module]:
    """conv - BN - LeakyReLU(0.2) of each of ``members`` networks side by side (channels ``members x``)."""
    return [_conv(members * c_in, members * c_out, k, stride, pad, downsample=downsample, groups=members),
            nn.BatchNorm2d(members * c_out), nn.LeakyReLU(0.2)]


def _cat_members(a: Tensor, b: Tensor, members: int) -> Tensor:
    """Concatenate the channels of ``a`` and ``b`` member by member: ``[a_1 b_1 a_2 b_2 ...]``.

    ``a``: ``(N, members * c_a, H, W)``, ``b``: ``(N, members * c_b, H, W)``, each a block of
    channels per member; the result keeps one contiguous block ``c_a + c_b`` per member, so
    the grouped convolution after it sees each member's own ``[skip, deeper]`` channels.
    """
    if members == 1:
        return torch.cat([a, b], dim=1)
    N, _, H, W = a.shape
    return torch.cat([a.view(N, members, -1, H, W), b.view(N, members, -1, H, W)], dim=2).view(N, -1, H, W)


class _Scale(nn.Module):
    """One scale of the hourglass: ``concat(skip(x), up(deeper(x)))`` followed by the up block."""

    def __init__(self, skip: nn.Module | None, deeper: nn.Module, after: nn.Module, members: int = 1) -> None:
        super().__init__()
        self.skip = skip
        self.deeper = deeper
        self.after = after
        self.members = members

    def forward(self, x: Tensor) -> Tensor:
        d = self.deeper(x)
        h = d if self.skip is None else _cat_members(self.skip(x), d, self.members)
        return self.after(h)


class Hourglass(nn.Module):
    """DIP encoder-decoder with optional skip connections (see the module docstring).

    Parameters
    ----------
    in_ch, out_ch:
        Input (noise) and output (image) channels.
    channels_down, channels_up, channels_skip:
        Per-scale channel counts ``d_i``, ``u_i``, ``s_i`` (equal lengths = number of
        scales ``S``).  ``channels_skip`` all zero gives the plain hourglass.
    kernel_down, kernel_up, kernel_skip:
        Kernel sizes (odd integers; one value or one per scale).
    upsample:
        ``'bilinear'`` or ``'nearest'`` (x2 per scale).
    downsample:
        ``'stride'`` (stride-2 convolution, official), ``'avg'`` or ``'max'`` pooling.
    pad:
        ``'reflection'`` or ``'zero'``.
    sigmoid:
        Apply a sigmoid to the output (images in [0, 1]).
    need_1x1_up:
        Add the 1x1 convolution block after each up convolution (official: yes).
    members:
        ``K`` independent networks of this layout side by side, as one module of grouped
        convolutions (``groups=K``: no weight connects two members, and batch
        normalisation is per channel, so per member).  The input is ``(N, in_ch, H, W)``
        (given to every member) or ``(N, K in_ch, H, W)`` (member ``k`` takes channels
        ``k in_ch .. (k+1) in_ch - 1``); the output is ``(N K, out_ch, H, W)``, row
        ``n K + k`` being member ``k`` on input ``n``.  :meth:`member` extracts one as a
        plain network, :meth:`stack` builds the ensemble from plain ones.
    """

    def __init__(self, in_ch: int = 32, out_ch: int = 3,
                 channels_down: Sequence[int] = (16, 32, 64, 128, 128),
                 channels_up: Sequence[int] = (16, 32, 64, 128, 128),
                 channels_skip: Sequence[int] = (4, 4, 4, 4, 4),
                 kernel_down: int | Sequence[int] = 3, kernel_up: int | Sequence[int] = 3,
                 kernel_skip: int | Sequence[int] = 1, upsample: str = "bilinear",
                 downsample: str = "stride", pad: str = "reflection", sigmoid: bool = True,
                 need_1x1_up: bool = True, members: int = 1) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        n = len(channels_down)
        if n < 1 or len(channels_up) != n or len(channels_skip) != n:
            raise ValueError("channels_down, channels_up and channels_skip must have the same "
                             f"non-zero length, got {len(channels_down)}, {len(channels_up)}, {len(channels_skip)}")
        if any(c < 1 for c in (*channels_down, *channels_up)) or any(c < 0 for c in channels_skip):
            raise ValueError("channel counts must be positive (skip channels >= 0)")
        if pad not in _PADDINGS:
            raise ValueError(f"pad must be one of {_PADDINGS}, got {pad!r}")
        if upsample not in _UPSAMPLE:
            raise ValueError(f"upsample must be one of {_UPSAMPLE}, got {upsample!r}")
        if downsample not in _DOWNSAMPLE:
            raise ValueError(f"downsample must be one of {_DOWNSAMPLE}, got {downsample!r}")

        def per_scale(v: int | Sequence[int], name: str) -> list[int]:
            vals = [v] * n if isinstance(v, int) else list(v)
            if len(vals) != n or any(k < 1 or k % 2 == 0 for k in vals):
                raise ValueError(f"{name} must be an odd positive int or {n} of them, got {v!r}")
            return vals

        kd, ku = per_scale(kernel_down, "kernel_down"), per_scale(kernel_up, "kernel_up")
        ks = per_scale(kernel_skip, "kernel_skip")
        self.in_ch, self.out_ch, self.scales, self.members = in_ch, out_ch, n, members
        self.config = dict(in_ch=in_ch, out_ch=out_ch, channels_down=tuple(channels_down),
                           channels_up=tuple(channels_up), channels_skip=tuple(channels_skip),
                           kernel_down=tuple(kd), kernel_up=tuple(ku), kernel_skip=tuple(ks),
                           upsample=upsample, downsample=downsample, pad=pad, sigmoid=sigmoid,
                           need_1x1_up=need_1x1_up)
        K = members
        align = False if upsample == "bilinear" else None

        # Build from the deepest scale outwards so each scale can nest the next one.
        inner: nn.Module | None = None
        for i in reversed(range(n)):
            c_in = in_ch if i == 0 else channels_down[i - 1]
            deeper: list[nn.Module] = _block(c_in, channels_down[i], kd[i], 2, pad, downsample, K)
            deeper += _block(channels_down[i], channels_down[i], kd[i], 1, pad, members=K)
            if inner is not None:
                deeper.append(inner)
            k_deep = channels_up[i + 1] if i < n - 1 else channels_down[i]
            deeper.append(nn.Upsample(scale_factor=2, mode=upsample, align_corners=align))
            skip = None
            if channels_skip[i] > 0:
                skip = nn.Sequential(*_block(c_in, channels_skip[i], ks[i], 1, pad, members=K))
            after: list[nn.Module] = [nn.BatchNorm2d(K * (channels_skip[i] + k_deep))]
            after += _block(channels_skip[i] + k_deep, channels_up[i], ku[i], 1, pad, members=K)
            if need_1x1_up:
                after += _block(channels_up[i], channels_up[i], 1, 1, pad, members=K)
            inner = _Scale(skip, nn.Sequential(*deeper), nn.Sequential(*after), K)
        self.body = inner
        head: list[nn.Module] = [nn.Conv2d(K * channels_up[0], K * out_ch, 1, groups=K)]
        if sigmoid:
            head.append(nn.Sigmoid())
        self.head = nn.Sequential(*head)

    @property
    def multiple(self) -> int:
        """Spatial sizes must be multiples of this (``2**scales``)."""
        return 2 ** self.scales

    def member(self, k: int) -> Hourglass:
        """Member ``k`` of an ensemble as a plain network (a copy of its weights and BN statistics)."""
        if not 0 <= k < self.members:
            raise IndexError(f"member {k} of an ensemble of {self.members}")
        ref = next(self.parameters())
        one = Hourglass(**self.config).to(device=ref.device, dtype=ref.dtype)
        mine = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        with torch.no_grad():
            for name, t in [*one.named_parameters(), *one.named_buffers()]:
                # Every grouped tensor holds the members' blocks one after the other along dim 0.
                t.copy_(mine[name] if t.ndim == 0 else mine[name].chunk(self.members)[k])
        return one.train(self.training)

    def member_input(self, z: Tensor, k: int) -> Tensor:
        """Member ``k``'s input: ``z`` itself when it is shared ``(N, in_ch, H, W)``, else its
        channels ``k in_ch .. (k+1) in_ch - 1`` of ``(N, K in_ch, H, W)``."""
        return z if z.shape[1] == self.in_ch else z[:, k * self.in_ch:(k + 1) * self.in_ch]

    @classmethod
    def stack(cls, nets: Sequence[Hourglass]) -> Hourglass:
        """The ensemble of plain networks of one layout: ``stack(nets).member(k)`` equals ``nets[k]``."""
        if not nets or any(n.members != 1 or n.config != nets[0].config for n in nets):
            raise ValueError("stack needs one or more plain Hourglass networks (members=1) of the same layout")
        ref = next(nets[0].parameters())
        ens = cls(**nets[0].config, members=len(nets)).to(device=ref.device, dtype=ref.dtype)
        parts = [{**dict(n.named_parameters()), **dict(n.named_buffers())} for n in nets]
        with torch.no_grad():
            for name, t in [*ens.named_parameters(), *ens.named_buffers()]:
                t.copy_(parts[0][name] if t.ndim == 0 else torch.cat([p[name] for p in parts]))
        return ens.train(nets[0].training)

    def forward(self, z: Tensor) -> Tensor:
        K = self.members
        if z.ndim != 4 or z.shape[1] not in (self.in_ch, K * self.in_ch):
            raise ValueError(f"Hourglass expects input (N, {self.in_ch}, H, W)"
                             + (f" or (N, {K * self.in_ch}, H, W) for its {K} members" if K > 1 else "")
                             + f", got {tuple(z.shape)}")
        m = self.multiple
        if z.shape[2] % m or z.shape[3] % m:
            raise ValueError(f"Hourglass with {self.scales} scales needs H and W divisible by {m}, "
                             f"got {z.shape[2]}x{z.shape[3]}; pad the input (see required_multiple)")
        if self.training and z.shape[0] * (z.shape[2] // m) * (z.shape[3] // m) == 1:
            raise ValueError(f"input {z.shape[2]}x{z.shape[3]} is too small for {self.scales} scales: the deepest "
                             "batch normalisation would see a single value per channel; use at least "
                             f"{2 * m} pixels along one side or fewer scales")
        if K > 1 and z.shape[1] == self.in_ch:
            z = z.repeat(1, K, 1, 1)  # one input for every member
        out = self.head(self.body(z))
        return out if K == 1 else out.view(z.shape[0] * K, self.out_ch, *out.shape[2:])


def skip_official(in_ch: int = 32, out_ch: int = 3, **overrides) -> Hourglass:
    """The official DIP setting for denoising / inpainting / super-resolution.

    5 scales x 128 channels down and up, 4 skip channels, 3x3 kernels (1x1 skip),
    bilinear upsampling, reflection padding, stride-2 downsampling, LeakyReLU(0.2),
    batch normalisation, sigmoid output; input 32 channels of U(0, 1/10) noise
    (:func:`get_noise_input`).  2,217,831 parameters for ``out_ch=3``.
    """
    kw = dict(channels_down=(128,) * 5, channels_up=(128,) * 5, channels_skip=(4,) * 5,
              upsample="bilinear", pad="reflection", sigmoid=True)
    kw.update(overrides)
    return Hourglass(in_ch, out_ch, **kw)


def skip_light(in_ch: int = 32, out_ch: int = 3, channels: Sequence[int] = (32, 64, 128, 128, 128),
               skip: int = 4, **overrides) -> Hourglass:
    """The suite's light default: the official layout with fewer channels at the fine scales.

    5 scales with ``channels = (32, 64, 128, 128, 128)`` down and up and ``skip = 4`` skip
    channels; everything else as :func:`skip_official`.  1,499,463 parameters; about a
    quarter of the official per-step cost on CPU (measured in docs/core.md), because most
    of the cost sits at the full-resolution scale.  ``channels=(16, 32, 64, 128, 128)``
    halves the cost again.
    """
    channels = tuple(channels)
    kw = dict(channels_down=channels, channels_up=channels, channels_skip=(skip,) * len(channels),
              upsample="bilinear", pad="reflection", sigmoid=True)
    kw.update(overrides)
    return Hourglass(in_ch, out_ch, **kw)


def required_multiple(net: nn.Module) -> int:
    """Multiple that the spatial size of ``net``'s input must have (``2**scales``; 1 if unknown)."""
    m = getattr(net, "multiple", None)
    return int(m) if m is not None else 1


def get_noise_input(channels: int, H: int, W: int, kind: str = "uniform", scale: float = 0.1,
                    generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The fixed network input ``z`` of shape ``(1, channels, H, W)``.

    ``kind='uniform'``: ``scale * U(0, 1)`` (the official DIP input with ``scale=1/10``);
    ``'normal'``: ``scale * N(0, 1)``; ``'meshgrid'``: two channels holding the normalised
    coordinates ``x = j/(W-1)``, ``y = i/(H-1)`` in [0, 1] (``channels`` must be 2; ``scale``
    unused).
    """
    if channels < 1 or H < 1 or W < 1:
        raise ValueError(f"noise input needs positive channels, H, W; got {channels}, {H}, {W}")
    if kind == "uniform":
        return torch.rand(1, channels, H, W, generator=generator, dtype=dtype) * scale
    if kind == "normal":
        return torch.randn(1, channels, H, W, generator=generator, dtype=dtype) * scale
    if kind == "meshgrid":
        if channels != 2:
            raise ValueError(f"meshgrid input has exactly 2 channels, got channels={channels}")
        ys = torch.linspace(0, 1, H, dtype=dtype) if H > 1 else torch.zeros(1, dtype=dtype)
        xs = torch.linspace(0, 1, W, dtype=dtype) if W > 1 else torch.zeros(1, dtype=dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([gx, gy])[None]
    raise ValueError(f"kind must be 'uniform', 'normal' or 'meshgrid', got {kind!r}")
