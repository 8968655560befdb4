"""Image front end: reading, validation (bad inputs), padding/cropping, writing."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from shared.cli import main
from shared.image.io import (
    ImageInputError,
    fit_to_multiple,
    read_image,
    read_mask,
    validate_array,
    write_image,
)


def _png(path, arr, mode=None):
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def _cli_error(capsys, argv):
    """Run the CLI, expect a user error (exit status 2), return its message."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


# ----------------------------------------------------------------------------- reading
def test_reads_rgb_and_grey_png_and_jpeg_into_unit_range(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    x = read_image(_png(tmp_path / "rgb.png", rgb))
    g = read_image(_png(tmp_path / "grey.png", grey))
    assert x.shape == (1, 3, 20, 30) and g.shape == (1, 1, 20, 30)
    assert torch.allclose(x[0, :, 3, 4], torch.tensor(rgb[3, 4] / 255.0, dtype=torch.float32))
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=95)
    j = read_image(tmp_path / "rgb.jpg")
    assert j.shape == (1, 3, 20, 30) and 0 <= float(j.min()) and float(j.max()) <= 1
    assert read_image(tmp_path / "rgb.png", channels=1).shape == (1, 1, 20, 30)
    assert read_image(tmp_path / "grey.png", channels=3).shape == (1, 3, 20, 30)


def test_reads_16_bit_png_and_opaque_rgba(tmp_path):
    arr16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(arr16).save(tmp_path / "deep.png")
    x = read_image(tmp_path / "deep.png")
    assert x.shape == (1, 1, 8, 8)
    assert abs(float(x.max()) - 63000 / 65535) < 1e-4
    rgba = np.full((6, 6, 4), 255, np.uint8)
    rgba[..., :3] = 40
    assert read_image(_png(tmp_path / "rgba.png", rgba)).shape == (1, 3, 6, 6)


# --------------------------------------------------------------------------- bad inputs
def test_missing_file_is_rejected_clearly(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"input image file .*nope\.png does not exist"):
        read_image(tmp_path / "nope.png", name="input image")
    err = _cli_error(capsys, ["image", "denoise", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")])
    assert "nope.png does not exist" in err


def test_non_image_file_is_rejected_clearly(tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("this is a text file, not a picture\n")
    with pytest.raises(ImageInputError, match="is not an image file this tool can read"):
        read_image(bad)
    err = _cli_error(capsys, ["image", "denoise", str(bad), "--out", str(tmp_path / "o")])
    assert "notes.png is not an image file" in err


def test_empty_image_is_rejected_clearly(tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageInputError, match=r"empty\.png is empty \(0 bytes\)"):
        read_image(empty)
    np.save(tmp_path / "empty.npy", np.zeros((0, 7), np.float32))
    with pytest.raises(ImageInputError, match=r"is empty \(0x7 pixels\)"):
        read_image(tmp_path / "empty.npy")
    err = _cli_error(capsys, ["image", "inpaint", str(empty), "--fraction", "0.5", "--out", str(tmp_path / "o")])
    assert "is empty" in err


def test_nan_and_inf_are_rejected_clearly(tmp_path, capsys):
    arr = np.full((8, 8), 0.5, np.float32)
    arr[1, 1] = np.nan
    arr[2, 2] = np.inf
    np.save(tmp_path / "nan.npy", arr)
    with pytest.raises(ImageInputError, match=r"non-finite values \(1 NaN, 1 Inf\)"):
        read_image(tmp_path / "nan.npy")
    # A 32-bit float TIFF can carry NaN too.
    Image.fromarray(arr, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(ImageInputError, match="non-finite values"):
        read_image(tmp_path / "nan.tif")
    err = _cli_error(capsys, ["image", "denoise", str(tmp_path / "nan.npy"), "--out", str(tmp_path / "o")])
    assert "NaN" in err and "nan.npy" in err


def test_wrong_channel_count_is_rejected_clearly(tmp_path, capsys):
    np.save(tmp_path / "two.npy", np.zeros((8, 8, 2), np.float32))
    with pytest.raises(ImageInputError, match=r"has 2 channels; expected 1 \(grey\) or 3 \(RGB\)"):
        read_image(tmp_path / "two.npy")
    with pytest.raises(ImageInputError, match=r"has 5 channels"):
        validate_array(np.zeros((4, 4, 5), np.uint8))
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 3] = 100  # semi-transparent
    with pytest.raises(ImageInputError, match="alpha channel with transparent pixels"):
        read_image(_png(tmp_path / "alpha.png", rgba))
    err = _cli_error(capsys, ["image", "denoise", str(tmp_path / "two.npy"), "--out", str(tmp_path / "o")])
    assert "has 2 channels" in err


def test_out_of_range_float_values_are_rejected(tmp_path):
    with pytest.raises(ImageInputError, match=r"must lie in \[0, 1\]"):
        validate_array(np.full((4, 4), 2.0, np.float32))


def test_mask_of_wrong_size_is_rejected_clearly(tmp_path, capsys):
    img = _png(tmp_path / "img.png", np.zeros((16, 24, 3), np.uint8))
    mask = _png(tmp_path / "mask.png", np.full((10, 12), 255, np.uint8))
    with pytest.raises(ImageInputError, match=r"mask .* is 12x10 pixels .* but the image is 24x16"):
        read_mask(mask, (16, 24))
    err = _cli_error(capsys, ["image", "inpaint", str(img), "--mask", str(mask), "--out", str(tmp_path / "o")])
    assert "must have the same size as the image" in err
    black = _png(tmp_path / "black.png", np.zeros((16, 24), np.uint8))
    with pytest.raises(ImageInputError, match="marks no pixel as known"):
        read_mask(black, (16, 24))


def test_bad_option_values_are_rejected(tmp_path, capsys):
    img = _png(tmp_path / "img.png", np.zeros((16, 16), np.uint8))
    err = _cli_error(capsys, ["image", "inpaint", str(img), "--fraction", "1.5", "--out", str(tmp_path / "o")])
    assert "--fraction" in err
    err = _cli_error(capsys, ["image", "denoise", str(img), "--iterations", "0", "--out", str(tmp_path / "o")])
    assert "--iterations" in err and "expected a value >= 1, got 0" in err


# ------------------------------------------------------------------ padding / cropping
def test_padding_to_a_multiple_is_announced_and_undone():
    x = torch.rand(1, 3, 50, 70)
    with pytest.warns(UserWarning, match=r"50.*padded by reflection to 80x64"):
        y, geo = fit_to_multiple(x, 16)
    assert y.shape == (1, 3, 64, 80) and geo.mode == "pad"
    assert torch.equal(geo.undo(y), x)
    # a result `scale` times larger (super-resolution) is un-padded by scale * pad
    big = torch.nn.functional.interpolate(y, scale_factor=4, mode="nearest")
    assert geo.undo(big, scale=4).shape == (1, 3, 200, 280)
    # the same adjustment applies to a mask of the input's size
    assert geo.apply(torch.ones(1, 1, 50, 70)).shape == (1, 1, 64, 80)


def test_cropping_to_a_multiple_is_announced_and_tiny_images_pad_safely():
    x = torch.rand(1, 1, 37, 33)
    with pytest.warns(UserWarning, match="cropped to the central 32x32"):
        y, geo = fit_to_multiple(x, 16, mode="crop")
    assert torch.equal(y, x[..., 2:34, 0:32])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same, g = fit_to_multiple(torch.rand(1, 1, 32, 32), 16)  # no change: no warning
    assert not g.changed
    tiny, g = fit_to_multiple(torch.rand(1, 1, 5, 3), 32, warn=False)  # pad larger than the image
    assert tiny.shape == (1, 1, 32, 32) and g.undo(tiny).shape == (1, 1, 5, 3)


# ------------------------------------------------------------------------------ writing
def test_write_image_never_overwrites_an_input(tmp_path):
    src = _png(tmp_path / "photo.png", np.full((8, 8), 77, np.uint8))
    before = src.read_bytes()
    with pytest.raises(ValueError, match="refusing to overwrite the input file"):
        write_image(tmp_path / "photo.png", torch.zeros(1, 1, 8, 8), protect=[src])
    assert src.read_bytes() == before
    out = write_image(tmp_path / "out" / "r.png", torch.full((1, 3, 8, 8), 0.5))
    assert read_image(out).shape == (1, 3, 8, 8)
