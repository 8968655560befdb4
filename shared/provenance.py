"""Where and how a benchmark ran: what every ``benchmarks/results/*.json`` records.

:func:`run_record` returns the git commit (and whether the tree had uncommitted changes),
torch's thread count, ``os.getloadavg()``, the device (``cpu`` or the CUDA device name),
the platform and the versions of Python and torch, so that figures measured on a shared
machine can be read with their load and compared only within one run.
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["run_record"]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_state() -> dict[str, Any]:
    """``commit`` (HEAD) and ``commit_dirty`` (uncommitted code, not results: a benchmark run
    just before may have rewritten its JSON) of the working tree now."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":!/benchmarks/results")
    return {"commit": _git("rev-parse", "HEAD"), "commit_dirty": None if status is None else bool(status)}


def run_record(device: str = "cpu", code: dict[str, Any] | None = None) -> dict[str, Any]:
    """Commit, threads, load average, device and versions of the running process
    (top-level keys of a results JSON: ``commit``, ``threads``, ``load_average``, ``device``, ...).

    ``code``: the :func:`code_state` taken when a long run started, so that the record names
    the code that ran even if the tree changed during the run (default: the state now)."""
    import torch

    dev = str(device)
    if dev.startswith("cuda") and torch.cuda.is_available():
        dev = f"{dev} ({torch.cuda.get_device_name(torch.device(dev))})"
    return {
        **(code or code_state()),
        "threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "device": dev,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
