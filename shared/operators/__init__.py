"""Linear forward operators ``A`` with exact adjoints, for batched tensors.

=================  ===========================  =====================================
operator           problem                      shapes (per batch item)
=================  ===========================  =====================================
``Identity``       denoising                    ``(C, H, W) -> (C, H, W)``
``PixelMask``      inpainting                   ``(C, H, W) -> (C, H, W)`` (0 where missing)
``Downsample``     super-resolution             ``(C, H, W) -> (C, H/f, W/f)``
``Blur``           deblurring                   ``(C, H, W) -> (C, H, W)`` (or valid part)
``GaussianMatrix`` compressed sensing           ``in_shape (n values) -> (m,)``
``Radon``          sparse-view CT               ``(C, n, n) -> (C, angles, n_det)``
=================  ===========================  =====================================

Each is a :class:`LinearOperator` (``op(x) == op.A(x)``, ``op.A_adjoint(y)``,
``op.A_dagger(y)``); :func:`adjointness_error` is the dot-product test.
"""
from shared.operators.base import LinearOperator, adjointness_error, conjugate_gradient
from shared.operators.basic import GaussianMatrix, Identity, PixelMask
from shared.operators.conv import Blur, Downsample, box_kernel, downsampling_kernel, gaussian_kernel
from shared.operators.radon import Radon, ramp_filter

__all__ = ["LinearOperator", "adjointness_error", "conjugate_gradient", "Identity", "PixelMask",
           "GaussianMatrix", "Blur", "Downsample", "gaussian_kernel", "box_kernel", "downsampling_kernel",
           "Radon", "ramp_filter"]
