"""Image input and output for the image front end.

Images are float tensors of shape ``(1, C, H, W)`` with values in ``[0, 1]``: ``C = 1``
(grey) or ``C = 3`` (RGB).  Readers check what a user can get wrong (a missing file, a
file that is not an image, an empty image, NaN/Inf values, a channel count that is
neither grey nor RGB, a mask whose size does not match its image) and say so in one
sentence that names the file.  Writers never overwrite an input file.

Networks with ``d`` down-sampling stages need ``H`` and ``W`` divisible by ``2**d``:
:func:`fit_to_multiple` pads (reflection) or crops an image to that multiple, says what
it did, and returns a :class:`Geometry` whose :meth:`Geometry.undo` maps a result back
to the size of the input.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ImageInputError",
    "read_image",
    "read_mask",
    "validate_array",
    "to_tensor",
    "to_array",
    "write_image",
    "Geometry",
    "fit_to_multiple",
    "to_grey",
    "resize",
    "centre_crop",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy"}

#: Largest image read by default (pixels): checked from the file's header before decoding,
#: so a small file that claims a huge size cannot allocate gigabytes (CLI: --max-pixels).
MAX_PIXELS = 64_000_000


class ImageInputError(ValueError):
    """A user-supplied image is unusable (the message says which file and why)."""


# --------------------------------------------------------------------------- reading
def validate_array(arr: np.ndarray, name: str = "image") -> np.ndarray:
    """Check an image array and return it as float32 ``(H, W, C)`` in ``[0, 1]``.

    Accepts ``(H, W)`` (grey), ``(H, W, 1)``, ``(H, W, 3)`` (RGB) and ``(H, W, 4)`` with an
    opaque alpha channel (dropped).  Integer arrays are scaled by their type's maximum
    (uint8: 255, uint16: 65535); float arrays must already lie in ``[0, 1]``.

    Raises :class:`ImageInputError` (a ``ValueError``) for an empty image, NaN/Inf values,
    a channel count other than 1 or 3, a transparent alpha channel, or values out of range.
    """
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ImageInputError(f"{name}: pixel type {arr.dtype} is not numeric")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ImageInputError(
            f"{name}: expected a 2-D image (height x width [x channels]), got an array of shape {arr.shape}"
        )
    h, w, c = arr.shape
    if h == 0 or w == 0:
        raise ImageInputError(f"{name} is empty ({h}x{w} pixels)")
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        if info.min < 0 and arr.min() < 0:
            raise ImageInputError(f"{name}: integer pixels must be non-negative, found {arr.min()}")
        if info.max <= 255:
            scale = 255.0
        elif arr.dtype == np.uint16:
            scale = 65535.0
        else:  # wider integers (e.g. .npy int64): infer 8 or 16 bit from the values
            top = int(arr.max())
            if top > 65535:
                raise ImageInputError(f"{name}: integer pixels up to {top} exceed 16 bit; save 8- or 16-bit data")
            scale = 255.0 if top <= 255 else 65535.0
        out = arr.astype(np.float32) / scale
    else:
        out = arr.astype(np.float32)
        bad = ~np.isfinite(out)
        if bad.any():
            n_nan = int(np.isnan(out).sum())
            n_inf = int(bad.sum()) - n_nan
            raise ImageInputError(
                f"{name} contains non-finite values ({n_nan} NaN, {n_inf} Inf); every pixel must be a finite number"
            )
        lo, hi = float(out.min()), float(out.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ImageInputError(
                f"{name}: floating-point pixels must lie in [0, 1], found values in [{lo:.4g}, {hi:.4g}]"
            )
        out = np.clip(out, 0.0, 1.0)
    if c == 4:
        if float(out[..., 3].min()) < 1.0:
            raise ImageInputError(
                f"{name} has an alpha channel with transparent pixels; flatten it to RGB (or grey) first"
            )
        out = out[..., :3]
        c = 3
    if c not in (1, 3):
        raise ImageInputError(f"{name} has {c} channels; expected 1 (grey) or 3 (RGB)")
    return np.ascontiguousarray(out)


def _check_size(path: Path, shape: tuple[int, ...], max_pixels: int) -> None:
    pixels = int(np.prod(shape[:2], dtype=np.int64)) if len(shape) >= 2 else 0
    if pixels > max_pixels:
        raise ImageInputError(
            f"{path} is {shape[1]}x{shape[0]} pixels ({pixels / 1e6:.1f} Mpx), more than the limit of "
            f"{max_pixels / 1e6:.0f} Mpx; pass --max-pixels to raise it if the image really is that large")


def _load_npy(path: Path, max_pixels: int) -> np.ndarray:
    try:
        header = np.load(path, mmap_mode="r", allow_pickle=False)
        _check_size(path, header.shape, max_pixels)
        return np.array(header)
    except ImageInputError:
        raise
    except Exception as exc:  # numpy raises several types for corrupt files
        raise ImageInputError(f"{path} is not a readable .npy array ({exc})") from None


def _load_array(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a file to a numpy array (no value checks yet); the size is checked before decoding."""
    if path.suffix.lower() == ".npy":
        return _load_npy(path, max_pixels)
    from PIL import Image, UnidentifiedImageError

    try:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own limit, with our message
        try:
            im = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
        with im:
            _check_size(path, (im.size[1], im.size[0]), max_pixels)
            im.load()
            mode = im.mode
            if mode == "P":  # palette: expand (keeps transparency, checked later)
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in ("1", "L;16", "I;16B", "I;16L"):
                im = im.convert("L") if mode == "1" else im
            elif mode == "LA":
                im = im.convert("RGBA")
            elif mode == "CMYK" or mode == "YCbCr":
                im = im.convert("RGB")
            arr = np.asarray(im)
            if mode in ("I", "I;16", "I;16B", "I;16L"):
                arr = arr.astype(np.uint16) if arr.max() <= 65535 else arr
            return arr
    except UnidentifiedImageError:
        raise ImageInputError(
            f"{path} is not an image file this tool can read (expected PNG, JPEG, TIFF, BMP or .npy)"
        ) from None
    except ImageInputError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"{path} could not be decoded as an image ({exc})") from None


def read_image(path: str | Path, channels: int | None = None, name: str = "image",
               max_pixels: int = MAX_PIXELS) -> Tensor:
    """Read an image file as a ``(1, C, H, W)`` float32 tensor in ``[0, 1]``.

    ``channels``: ``None`` keeps the file's (1 or 3), ``1`` converts RGB to grey
    (ITU-R BT.601 luma), ``3`` repeats a grey image over three channels.  An image of more
    than ``max_pixels`` pixels (read from its header) is refused before it is decoded.
    Supported: PNG, JPEG, TIFF, BMP (8 or 16 bit) and ``.npy`` arrays (integer, or float in [0, 1]).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{name} file {path} does not exist")
    if path.is_dir():
        raise ImageInputError(f"{name} path {path} is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ImageInputError(f"{name} file {path} is empty (0 bytes)")
    arr = validate_array(_load_array(path, max_pixels), name=f"{name} {path}")
    x = to_tensor(arr)
    if channels == 1 and x.shape[1] == 3:
        x = to_grey(x)
    elif channels == 3 and x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    elif channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels}")
    return x


def read_mask(path: str | Path, shape: tuple[int, int], name: str = "mask", max_pixels: int = MAX_PIXELS) -> Tensor:
    """Read a binary mask (white = known pixel) as a ``(1, 1, H, W)`` float tensor of 0/1.

    ``shape`` is the ``(H, W)`` of the image the mask belongs to; a different size is an
    error (a mask is never silently resized).  Colour masks are reduced to grey; values
    are thresholded at 0.5.
    """
    m = read_image(path, name=name, max_pixels=max_pixels)
    h, w = m.shape[-2:]
    if (h, w) != tuple(shape):
        raise ImageInputError(
            f"{name} {path} is {w}x{h} pixels (width x height) but the image is {shape[1]}x{shape[0]}; "
            "the mask must have the same size as the image"
        )
    if m.shape[1] == 3:
        m = m.mean(dim=1, keepdim=True)
    m = (m > 0.5).float()
    if float(m.sum()) == 0:
        raise ImageInputError(f"{name} {path} marks no pixel as known (it is all black)")
    return m


def to_tensor(arr: np.ndarray) -> Tensor:
    """``(H, W[, C])`` array -> ``(1, C, H, W)`` float32 tensor (no scaling)."""
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None].clone()


def to_array(x: Tensor) -> np.ndarray:
    """``(1, C, H, W)`` (or ``(C, H, W)``) tensor -> ``(H, W)`` or ``(H, W, 3)`` float array clipped to [0, 1]."""
    x = x.detach().cpu().float()
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected a single image, got a batch of {x.shape[0]}")
        x = x[0]
    arr = x.clamp(0, 1).numpy().transpose(1, 2, 0)
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def write_image(path: str | Path, x: Tensor | np.ndarray, protect: Iterable[str | Path] = ()) -> Path:
    """Write an image (tensor or array in [0, 1]) as an 8-bit PNG/JPEG.

    Refuses to write onto any path in ``protect`` (the user's input files).
    """
    from PIL import Image

    path = Path(path)
    target = path.resolve()
    for p in protect:
        if p is not None and Path(p).resolve() == target:
            raise ValueError(f"refusing to overwrite the input file {p}; choose another --out folder")
    arr = to_array(x) if isinstance(x, Tensor) else np.clip(np.asarray(x, dtype=np.float32), 0, 1)
    img = Image.fromarray(np.round(arr * 255).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def to_grey(x: Tensor) -> Tensor:
    """RGB -> luma ``Y' = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601), keeping the channel axis."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Anti-aliased bilinear resize of a ``(B, C, H, W)`` tensor to ``size = (H', W')``."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


# ----------------------------------------------------------------- size adjustment
@dataclass
class Geometry:
    """How an image was padded or cropped to a network's multiple.

    ``pad = (left, right, top, bottom)`` pixels added (reflection); ``crop = (top, left)``
    offset of the kept window; ``original`` the input ``(H, W)``; ``adjusted`` the size the
    network sees.  :meth:`undo` maps an adjusted-size image back to the input size
    (removing padding; a cropped image cannot be extended, so the crop stays).
    """

    original: tuple[int, int]
    adjusted: tuple[int, int]
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    crop: tuple[int, int] = (0, 0)
    mode: str = "none"
    message: str = ""

    @property
    def changed(self) -> bool:
        return self.original != self.adjusted

    def apply(self, x: Tensor) -> Tensor:
        """Apply the same adjustment to another image of the original size (e.g. a mask)."""
        if tuple(x.shape[-2:]) != self.original:
            raise ValueError(f"expected size {self.original}, got {tuple(x.shape[-2:])}")
        if self.mode == "pad":
            return _pad(x, self.pad)
        if self.mode == "crop":
            t, l = self.crop
            return x[..., t : t + self.adjusted[0], l : l + self.adjusted[1]]
        return x

    def undo(self, x: Tensor, scale: int = 1) -> Tensor:
        """Remove the padding from a result (``scale``: result is ``scale`` times larger, e.g. super-resolution)."""
        if self.mode != "pad":
            return x
        l, r, t, b = (p * scale for p in self.pad)
        h, w = x.shape[-2:]
        return x[..., t : h - b, l : w - r]


def _pad(x: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
    l, r, t, b = pad
    h, w = x.shape[-2:]
    # Reflection needs the pad to be smaller than the side; tiny images fall back to edge replication.
    mode = "reflect" if max(l, r) < w and max(t, b) < h else "replicate"
    return F.pad(x, pad, mode=mode)


def fit_to_multiple(x: Tensor, multiple: int, mode: str = "pad", name: str = "image", warn: bool = True,
                    min_size: int = 0) -> tuple[Tensor, Geometry]:
    """Pad (reflection) or crop ``x`` so that H and W are multiples of ``multiple``.

    Padding is split evenly between the two sides; cropping keeps the centre.  Sides
    shorter than ``min_size`` are padded up to it (rounded up to the multiple) in either
    mode: a network with ``S`` scales needs more than one pixel at its coarsest scale.
    When the size changes, a message saying what was done is stored in
    ``Geometry.message`` and issued as a ``UserWarning`` (unless ``warn=False``).
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    h, w = x.shape[-2:]
    small = h < min_size or w < min_size
    if h % multiple == 0 and w % multiple == 0 and not small:
        return x, Geometry((h, w), (h, w))
    if small:
        mode = "pad"
    if mode == "pad":
        H, W = (max(math.ceil(s / multiple), math.ceil(min_size / multiple)) * multiple for s in (h, w))

        t, l = (H - h) // 2, (W - w) // 2
        pad = (l, W - w - l, t, H - h - t)
        geo = Geometry((h, w), (H, W), pad=pad, mode="pad")
        need = f"multiples of {multiple}" + (f" and at least {min_size} pixels" if small else "")
        geo.message = (
            f"{name} is {w}x{h} (width x height); the network needs {need}: "
            f"padded by reflection to {W}x{H}; the padding is removed from the result"
        )
        out = _pad(x, pad)
    elif mode == "crop":
        H, W = (h // multiple) * multiple, (w // multiple) * multiple
        if H == 0 or W == 0:
            raise ImageInputError(
                f"{name} is {w}x{h}, smaller than the network's multiple {multiple}; use padding instead of cropping"
            )
        t, l = (h - H) // 2, (w - W) // 2
        geo = Geometry((h, w), (H, W), crop=(t, l), mode="crop")
        geo.message = (
            f"{name} is {w}x{h} (width x height); the network needs multiples of {multiple}: "
            f"cropped to the central {W}x{H}; the result has that size"
        )
        out = x[..., t : t + H, l : l + W]
    else:
        raise ValueError(f"mode must be 'pad' or 'crop', got {mode!r}")
    if warn:
        warnings.warn(geo.message, UserWarning, stacklevel=2)
    return out, geo


def centre_crop(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """The central ``size`` (``(H', W')`` or a side) window of a ``(..., H, W)`` tensor."""
    hh, ww = (size, size) if isinstance(size, int) else size
    h, w = x.shape[-2:]
    if hh > h or ww > w:
        raise ValueError(f"cannot crop {ww}x{hh} from an image of {w}x{h}")
    t, l = (h - hh) // 2, (w - ww) // 2
    return x[..., t : t + hh, l : l + ww].contiguous()
