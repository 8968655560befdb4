"""The EIT methods by name: one reconstructor each, built from its name and settings.

========== ============================================================ ======================
name       reconstructor                                                result's method
========== ============================================================ ======================
neural     :class:`eit.reconstruct.NeuralEIT` (net ``mlp`` or ``conv``) ``neural-<net>``
onestep    :class:`eit.baselines.OneStep` (the organisers' method)       ``onestep``
gn         :class:`eit.baselines.GaussNewton` with ``prior="tikhonov"``  ``gn-tikhonov``
gn-tv      :class:`eit.baselines.GaussNewton` with ``prior="tv"``        ``gn-tv``
dbar       :class:`eit.dbar.DBar` (D-bar, difference data on a disk)     ``dbar``
========== ============================================================ ======================

:func:`make_reconstructor` builds one (``lr=None`` for ``neural`` is the tuned step of its
network, :data:`eit.reconstruct.TUNED_LR`); :func:`run_methods` runs several on one problem,
handing each result to ``on_result`` as soon as it is there.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from shared.reconstructor import Reconstructor
from shared.result import Result

from eit.baselines import GaussNewton, OneStep
from eit.dbar import DBar
from eit.reconstruct import TUNED_LR, NeuralEIT

__all__ = ["METHODS", "make_reconstructor", "run_methods"]

#: method name -> (reconstructor class, fixed settings)
METHODS: dict[str, tuple[type[Reconstructor], dict[str, Any]]] = {
    "neural": (NeuralEIT, {}),
    "onestep": (OneStep, {}),
    "gn": (GaussNewton, {"prior": "tikhonov"}),
    "gn-tv": (GaussNewton, {"prior": "tv"}),
    "dbar": (DBar, {}),
}


def make_reconstructor(name: str, **settings: Any) -> Reconstructor:
    """The reconstructor of method ``name`` with ``settings`` (its constructor's arguments;
    ``None`` values are left at their defaults)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    cls, fixed = METHODS[name]
    settings = {k: v for k, v in settings.items() if v is not None}
    if cls is NeuralEIT and "lr" not in settings:
        settings["lr"] = TUNED_LR.get(settings.get("net", "mlp"), TUNED_LR["mlp"])
    unknown = set(settings) - set(cls._param_names())
    if unknown:
        raise ValueError(f"method {name!r} has no setting {', '.join(sorted(unknown))}; "
                         f"settings: {', '.join(cls._param_names())}")
    return cls(**fixed, **settings)


def run_methods(problem, methods: Iterable[str], neural: dict[str, Any] | None = None,
                on_result: Callable[[Result], Any] | None = None) -> list[Result]:
    """Reconstruct ``problem`` with each named method (``neural``: settings of the neural one);
    ``on_result(result)`` is called as each method finishes."""
    results = []
    for name in methods:
        settings = (neural or {}) if name == "neural" else {}
        rec = make_reconstructor(name, **settings)
        result = rec.reconstruct(problem)
        if on_result is not None:
            on_result(result)
        results.append(result)
    return results
