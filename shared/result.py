"""The result every reconstructor returns, and the one JSON writer of the suite.

A :class:`Result` holds a method's outputs (``arrays``: images, point clouds, meshes,
conductivities), its ``metrics`` (against a reference when one is known), ``timings``
(seconds), the ``config`` that produced it (the reconstructor's ``get_params()``), the
engine's :class:`shared.fit.FitResult` (``fit``; ``None`` for classical baselines) and the
files it writes: ``files`` maps a file name to a writer ``f(path)``, so a CLI knows
every file a run will write before it runs (:meth:`file_names`) and can refuse to
overwrite an input.  :meth:`write` writes them and ``metrics.json``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["Result", "write_json", "to_json"]


@dataclass
class Result:
    """Outputs, metrics, timings and settings of one reconstruction (module docstring)."""

    method: str
    arrays: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    fit: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Callable[[Path], Any]] = field(default_factory=dict, repr=False)

    def file_names(self) -> list[str]:
        """Names of the files :meth:`write` creates (``metrics.json`` last)."""
        return [*self.files, "metrics.json"]

    def summary(self) -> dict[str, Any]:
        """What ``metrics.json`` records."""
        return {"method": self.method, "metrics": self.metrics, "timings": self.timings, "config": self.config,
                **self.info}

    def write(self, out_dir: str | Path, metrics_file: str | None = "metrics.json") -> list[Path]:
        """Write every file of ``files`` (and ``metrics_file`` unless None) into ``out_dir``."""
        out = Path(out_dir)
        written = []
        for name, writer in self.files.items():
            writer(out / name)
            written.append(out / name)
        if metrics_file is not None:
            written.append(write_json(out / metrics_file, self.summary()))
        return written


def to_json(value: Any) -> Any:
    """``value`` as plain JSON data: numpy/torch scalars and arrays become numbers and lists,
    paths and other objects strings, tuples lists, non-finite floats ``null``."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_json(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        return to_json(value.tolist())
    return str(value)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` (through :func:`to_json`) as indented JSON; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(to_json(data), indent=2, allow_nan=False) + "\n")
    return path
