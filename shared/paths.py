"""Where the optional real data lives.

Real data (test images, bunny scans, KTC tank measurements) is not part of the package;
it is looked up in ``$UNTRAINED_DATA`` or in ``../shared/data`` beside the project root.
Nothing needs it to install or to run the embedded demo.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """The real-data folder, or None when it is absent."""
    env = os.environ.get("UNTRAINED_DATA")
    for candidate in ([Path(env)] if env else []) + [PROJECT_ROOT.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return None


def require_data(*parts: str) -> Path:
    """Path of a file or folder inside the real-data folder; a clear error if it is missing."""
    root = shared_data_dir()
    if root is None:
        raise FileNotFoundError(
            "the real-data folder was not found: set UNTRAINED_DATA or place it at "
            f"{PROJECT_ROOT.parent / 'shared' / 'data'}"
        )
    path = root.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist in the real-data folder {root}")
    return path
