"""Tagged checkpoints of the image front end: one format for every network saved here.

A checkpoint is a torch file holding ``{"format": tag, "config": ..., "state_dict": ...,
"meta": ...}``, read with ``weights_only=True`` (no code runs on load).  The tag says what
kind of network it is (EDIP's pretrained U-Net, a learned generator), so a file of the
wrong kind is refused by name instead of failing inside ``load_state_dict``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["save_tagged", "read_tagged"]


def save_tagged(path: str | Path, tag: str, config: dict[str, Any], state_dict: dict[str, Any],
                meta: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint of kind ``tag`` at ``path`` (its folder made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": tag, "config": dict(config), "state_dict": state_dict, "meta": dict(meta or {})}, path)
    return path


def read_tagged(path: str | Path, tag: str, what: str, make_hint: str) -> dict[str, Any]:
    """The checkpoint dictionary at ``path``, refusing with a message naming the file: a missing
    file (with ``make_hint``, how to make it), one torch cannot read, and one of another kind
    than ``tag`` (``what`` names the kind in the messages)."""
    path = Path(path)
    article = "an" if what[:1].upper() in "AEIOU" else "a"
    if not path.is_file():
        raise FileNotFoundError(f"{what} checkpoint {path} not found (make it with: {make_hint})")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupted file or not a torch file at all
        raise ValueError(f"{path} is not a readable {what} checkpoint: {exc}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != tag:
        raise ValueError(f"{path} is not {article} {what} checkpoint (missing format tag {tag!r})")
    return ckpt
