"""The EIT forward models as :class:`shared.physics.Physics` objects (what the engine fits through).

:class:`EITPhysics` wraps a forward model of :mod:`eit.forward` (the complete electrode
model :class:`eit.forward.CEM`, or the continuum models ``NeumannModel`` and
``DirichletModel``) as an :class:`shared.physics.ExternalPhysics`::

    A(sigma) = F(sigma)                      (n_sigma,) -> (n_data,)
    A_vjp(sigma, v) = J(sigma)^T v           by the adjoint method

``solve`` assembles and factorises ``A(sigma)`` once and keeps the solution (factorisation,
fields) as the state of the vector-Jacobian product, so the backward pass costs no new
sparse factorisation and no Jacobian is formed (see :mod:`eit.forward` for the adjoint
equations).  ``A`` takes ``(n_sigma,)`` or a batch ``(B, n_sigma)`` tensor and is
differentiable by autograd (the base class wraps ``solve``/``vjp`` in a
``torch.autograd.Function``).

Learnable contact impedances (``contact=True``, complete electrode model only): the unknown
is the concatenation ``x = (sigma, log z)`` of length ``n_sigma + L``, so ``z = e^t`` stays
positive, and::

    A(x) = F(sigma; z = e^t),    J_x^T v = (J_sigma^T v,  z * (dF/dz)^T v)

with ``(dF/dz)^T v`` from :meth:`eit.forward.CEM.vjp_contact`.  Each solve sets the
impedances on the model (``model.set_contact_impedance``), where they stay.

``noise_std``: the per-measurement standard deviations of the noise model (a float or an
array/tensor of shape ``(n_data,)``), for data terms and stopping rules that use it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from shared.physics import ExternalPhysics

__all__ = ["EITPhysics"]


class EITPhysics(ExternalPhysics):
    """``sigma -> F(sigma)`` of an EIT forward model (module docstring).

    Parameters
    ----------
    model: a forward model of :mod:`eit.forward` (``solve``, ``vjp``, ``n_sigma``, ``n_data``).
    noise_std: noise model, per-measurement standard deviations (or None).
    contact: the unknown is ``(sigma, log z)`` (CEM only): learn the contact impedances too.
    """

    def __init__(self, model, noise_std: float | np.ndarray | Tensor | None = None, contact: bool = False) -> None:
        if isinstance(noise_std, np.ndarray):
            noise_std = torch.as_tensor(noise_std, dtype=torch.float64)
        super().__init__(noise_std)
        if contact and not hasattr(model, "vjp_contact"):
            raise ValueError("contact impedances z only exist in the complete electrode model (CEM)")
        self.model = model
        self.contact = bool(contact)
        self.measurement_shape = (int(model.n_data),)

    @property
    def n_unknowns(self) -> int:
        """Length of ``x``: ``n_sigma`` (plus ``L`` with ``contact``)."""
        return self.model.n_sigma + (self.model.L if self.contact else 0)

    def solve(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        """``F(x)`` and the solution object (factorisation and fields) for :meth:`vjp`."""
        if self.contact:
            n = self.model.n_sigma
            if x.shape != (self.n_unknowns,):
                raise ValueError(f"with contact impedances x = (sigma, log z) must have shape "
                                 f"({self.n_unknowns},), got {x.shape}")
            self.model.set_contact_impedance(np.exp(x[n:]))
            x = x[:n]
        sol = self.model.solve(x)
        return sol.data, sol

    def vjp(self, state: Any, v: np.ndarray) -> np.ndarray:
        """``J^T v`` on the stored solution (with ``contact``: also ``z * (dF/dz)^T v``)."""
        g = self.model.vjp(state, v)
        if not self.contact:
            return g
        return np.concatenate([g, state.z * self.model.vjp_contact(state, v)])
