"""The reconstructor contract: settings at construction, one call, one :class:`Result`.

In the manner of scikit-learn's estimators, every method of the suite (deep image prior,
deep geometric prior, neural EIT, and the classical baselines beside them) is a class
whose ``__init__`` takes only settings and stores each under its own name;
:meth:`Reconstructor.get_params` returns them (what every JSON records) and
:meth:`Reconstructor.reconstruct` turns a measurement into a :class:`shared.result.Result`::

    rec = DeepImagePrior(net="skip", iterations=1800)
    result = rec.reconstruct(problem)
    result.write("out/")
"""
from __future__ import annotations

import inspect
from typing import Any

from shared.result import Result

__all__ = ["Reconstructor"]


class Reconstructor:
    """Base class: subclasses store every ``__init__`` argument as an attribute of the same name."""

    #: the method's name in tables and file names
    method = "reconstructor"

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [n for n, p in sig.parameters.items()
                if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        """The settings given at construction, by name."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Reconstructor:
        """Change settings by name (unknown names are refused); returns ``self``."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no setting {name!r}; settings: {', '.join(sorted(valid))}")
            setattr(self, name, value)
        return self

    def reconstruct(self, measurement: Any) -> Result:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
