"""Bad inputs, interruptions and internal failures across the three front ends (issue 14).

Each case of :data:`CASES` is a command that must end with a given exit code, a phrase its
message must contain, its input files unchanged (checksums) and, when it is refused
before any work, no output folder left behind.  The rest covers what a table cannot:
degenerate geometry that must reconstruct, float64 outputs, Ctrl-C, internal errors,
and property-based fuzzing of the readers (truncations and byte flips never give a
traceback or a silent success with wrong data).
"""
from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.cli import main

# ------------------------------------------------------------------------ input files
def _png_header(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims ``w x h`` pixels (the body is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))


def _sphere(n: int = 400, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).standard_normal((n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def _binary_ply(points: np.ndarray) -> bytes:
    head = f"ply\nformat binary_little_endian 1.0\nelement vertex {len(points)}\n" \
           "property float x\nproperty float y\nproperty float z\nend_header\n"
    return head.encode() + points.astype("<f4").tobytes()


def _ascii_ply(points: np.ndarray, count: int | None = None) -> bytes:
    head = f"ply\nformat ascii 1.0\nelement vertex {len(points) if count is None else count}\n" \
           "property float x\nproperty float y\nproperty float z\nend_header\n"
    return (head + "".join(f"{x} {y} {z}\n" for x, y, z in points)).encode()


def _files(root: Path) -> dict[str, Path]:
    """Every input file the cases use, written once per test into ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    f = {}
    f["bomb"] = root / "bomb.png"
    f["bomb"].write_bytes(_png_header(100_000, 100_000))
    f["big"] = root / "big.png"
    f["big"].write_bytes(_png_header(12_000, 12_000))
    f["img"] = root / "std.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(f["img"])
    f["file"] = root / "a_file"
    f["file"].write_text("not a folder")
    pts = _sphere()
    f["cloud"] = root / "sphere.npy"
    np.save(f["cloud"], pts)
    full = _binary_ply(pts)
    f["truncated"] = root / "truncated.ply"
    f["truncated"].write_bytes(full[: len(full) - 6 * 12 * 100])  # half the vertices gone
    nan = pts.copy()
    nan[[5, 77]] = np.nan
    f["nan_rows"] = root / "nan_rows.ply"
    f["nan_rows"].write_bytes(_ascii_ply(nan))
    f["no_body"] = root / "no_body.ply"
    f["no_body"].write_bytes(_ascii_ply(np.empty((0, 3)), count=300))
    f["zero_q"] = root / "scans.conf"
    f["zero_q"].write_text("camera 0 0 0 0 0 0 1\nbmesh sphere.npy 0 0 0 0 0 0 0\n")
    return f


GEO = ["geoprior", "reconstruct"]
FAST_GEO = ["--iterations", "5", "--quiet"]

#: (id, argv with {name} placeholders for files, expected exit code, phrase in the message)
CASES = [
    ("png-bomb", ["image", "denoise", "{bomb}"], 2, "more than the limit of 64 Mpx"),
    ("png-12k", ["image", "denoise", "{big}"], 2, "--max-pixels"),
    ("uncertainty-over-input", ["image", "denoise", "{img}", "--uncertainty", "--out", "{root}"], 2,
     "refusing to overwrite the input file"),
    ("out-under-file", ["image", "denoise", "{img}", "--out", "{file}/sub"], 2, "which is a file"),
    ("out-is-file-image", ["image", "denoise", "{img}", "--out", "{file}"], 2, "is not a folder"),
    ("out-is-file-geoprior", [*GEO, "{cloud}", "--out", "{file}"], 2, "is not a folder"),
    ("device-bogus-image", ["image", "denoise", "{img}", "--device", "bogus"], 2, "torch device"),
    ("device-bogus-geoprior", [*GEO, "{cloud}", "--device", "bogus"], 2, "torch device"),
    ("device-bogus-eit", ["eit", "reconstruct", "--phantom", "two-inclusion", "--device", "bogus"], 2, "torch device"),
    ("lr-inf-image", ["image", "denoise", "{img}", "--lr", "inf"], 2, "--lr"),
    ("lr-inf-geoprior", [*GEO, "{cloud}", "--lr", "inf"], 2, "--lr"),
    ("lr-inf-eit", ["eit", "reconstruct", "--phantom", "two-inclusion", "--lr", "inf"], 2, "--lr"),
    ("sigma-nan", ["image", "denoise", "{img}", "--simulate", "--sigma", "nan"], 2, "--sigma"),
    ("tv-nan", ["eit", "reconstruct", "--phantom", "two-inclusion", "--tv", "nan"], 2, "--tv"),
    ("tv-negative", ["eit", "reconstruct", "--phantom", "two-inclusion", "--tv", "-1"], 2, "--tv"),
    ("noise-nan", ["eit", "reconstruct", "--phantom", "two-inclusion", "--noise", "nan"], 2, "--noise"),
    ("consistency-negative", [*GEO, "{cloud}", "--consistency-iterations", "-1"], 2, "--consistency-iterations"),
    ("depth-zero", [*GEO, "{cloud}", "--depth", "0"], 2, "depth"),
    ("ply-truncated", [*GEO, "{truncated}"], 2, "truncated PLY"),
    ("ply-nan-rows", [*GEO, "{nan_rows}"], 2, "2 point(s) have NaN"),
    ("ply-no-body", [*GEO, "{no_body}"], 2, "declares 300 vertices"),
    ("conf-zero-quaternion", [*GEO, "{zero_q}"], 2, "line 2"),
    ("ktc-is-a-file", ["eit", "reconstruct", "--ktc", "{file}"], 2, "is a file"),
    ("level-out-of-range", ["eit", "reconstruct", "--phantom", "two-inclusion", "--level", "9"], 2, "--level"),
]


def _digest(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path, capsys):
    name, argv, code, phrase = case
    files = _files(tmp_path / "in")
    names = {**{k: str(v) for k, v in files.items()}, "root": str(tmp_path / "in")}
    out = tmp_path / "out"
    args = [a.format(**names) for a in argv]
    if "--out" not in args:
        args += ["--out", str(out)]
    before = _digest(list(files.values()))
    rc = main(args)
    captured = capsys.readouterr()
    message = captured.err + captured.out
    assert rc == code, message
    assert phrase in message, message
    assert "Traceback" not in message
    assert _digest(list(files.values())) == before  # nothing the user gave is changed
    assert not out.exists()  # refused before any work: no folder left


# ------------------------------------------------------------------ degenerate geometry
@pytest.mark.parametrize("shape", ["flat", "collinear"])
def test_degenerate_clouds_reconstruct_or_explain(shape, tmp_path, capsys):
    rng = np.random.default_rng(0)
    if shape == "flat":
        pts = np.c_[rng.random((300, 2)), np.zeros(300)]
    else:
        t = rng.random(200)
        pts = np.c_[t, 2 * t, 3 * t] + 1e-9 * rng.standard_normal((200, 3))
    np.save(tmp_path / "c.npy", pts)
    rc = main([*GEO, str(tmp_path / "c.npy"), "--out", str(tmp_path / "o"), *FAST_GEO])
    message = capsys.readouterr().err
    assert "Traceback" not in message and "bug" not in message
    assert rc in (0, 2), message
    if rc == 0:
        assert (tmp_path / "o" / "dense.ply").stat().st_size > 0


def test_georeferenced_coordinates_keep_their_digits(tmp_path):
    from geoprior.ply import read_vertices

    centre = np.array([5e6, 5e6, 100.0])
    np.save(tmp_path / "geo.npy", _sphere(1500) + centre)
    rc = main([*GEO, str(tmp_path / "geo.npy"), "--out", str(tmp_path / "o"), "--iterations", "20", "--quiet"])
    assert rc == 0
    pts, _ = read_vertices(tmp_path / "o" / "dense.ply")
    radius = np.linalg.norm(pts - centre, axis=1)
    assert abs(np.median(radius) - 1.0) < 0.05  # float32 would quantise 5e6 to steps of 0.5
    assert b"property double x" in (tmp_path / "o" / "dense.ply").read_bytes()[:300]


# -------------------------------------------------- internal errors, divergence, Ctrl-C
def test_internal_error_says_bug_and_keeps_the_traceback(tmp_path, capsys, monkeypatch):
    from shared.image import dip

    def broken(self, problem, **kwargs):
        raise ValueError("NaN inside a solver")  # a ValueError after the work started is a bug

    monkeypatch.setattr(dip.DeepImagePrior, "reconstruct", broken)
    img = _files(tmp_path / "in")["img"]
    rc = main(["image", "denoise", str(img), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "This is a bug" in err and "Traceback" not in err
    assert "NaN inside a solver" in (tmp_path / "o" / "traceback.txt").read_text()
    rc = main(["image", "denoise", str(img), "--out", str(tmp_path / "o2"), "--quiet", "--debug"])
    assert rc == 1 and "Traceback" in capsys.readouterr().err


def test_a_diverged_fit_exits_1_with_its_last_finite_state(tmp_path, capsys):
    img = _files(tmp_path / "in")["img"]
    rc = main(["image", "denoise", str(img), "--lr", "1e30", "--iterations", "30", "--out", str(tmp_path / "o"),
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "diverged" in err
    report = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert report["metrics"]["stopped_by"] == "non-finite" and (tmp_path / "o" / "result.png").exists()


def _interrupt_at(monkeypatch, iteration: int) -> None:
    """Send SIGINT to this process when the engine logs ``iteration``."""
    import os
    import signal

    import importlib

    engine = importlib.import_module("shared.fit")  # the module (shared.fit the name is the function)
    log = engine._log

    def log_and_interrupt(history, record, *args):
        log(history, record, *args)
        if record.iteration == iteration:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(engine, "_log", log_and_interrupt)


def test_ctrl_c_writes_the_best_output_so_far(tmp_path, capsys, monkeypatch):
    _interrupt_at(monkeypatch, 5)
    img = _files(tmp_path / "in")["img"]
    rc = main(["image", "denoise", str(img), "--iterations", "1000", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 130, capsys.readouterr().err
    report = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert report["metrics"]["interrupted"] is True and report["metrics"]["iterations_run"] == 6
    assert (tmp_path / "o" / "result.png").stat().st_size > 0


def test_interrupted_multi_method_run_keeps_finished_methods(tmp_path, monkeypatch):
    from eit import baselines

    def interrupted(self, problem):
        raise KeyboardInterrupt

    monkeypatch.setattr(baselines.GaussNewton, "reconstruct", interrupted)
    out = tmp_path / "o"
    rc = main(["eit", "reconstruct", "--phantom", "two-inclusion", "--method", "onestep", "gn", "--out", str(out),
               "--quiet"])
    assert rc == 130
    assert (out / "sigma_onestep.png").stat().st_size > 0
    assert "onestep" in json.loads((out / "metrics.json").read_text())["methods"]


# ------------------------------------------------------------------- fuzzed readers
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
VALID_PTS = _sphere(50, seed=3)


def _read_cloud(tmp: Path, data: bytes, name: str):
    from geoprior.io import load_cloud

    path = tmp / name
    path.write_bytes(data)
    try:
        return load_cloud(path)
    except (ValueError, FileNotFoundError) as exc:
        assert str(path) in str(exc)  # the message names the file
        return None


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len(_binary_ply(VALID_PTS)) - 1),
       fmt=st.sampled_from(["binary", "ascii"]))
def test_truncated_ply_is_always_refused(tmp_path_factory, cut, fmt):
    data = _binary_ply(VALID_PTS) if fmt == "binary" else _ascii_ply(VALID_PTS)
    cut = min(cut, len(data) - 2)
    if fmt == "ascii":  # a cut inside the last row's final number can leave a shorter but valid number
        cut = min(cut, data.rfind(b"\n", 0, len(data) - 1))
    cloud = _read_cloud(tmp_path_factory.mktemp("ply"), data[:cut], "t.ply")
    assert cloud is None


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
                      min_size=1, max_size=4),
       fmt=st.sampled_from(["binary", "ascii"]))
def test_byte_flips_in_a_ply_give_an_error_or_the_declared_points(tmp_path_factory, flips, fmt):
    data = bytearray(_binary_ply(VALID_PTS) if fmt == "binary" else _ascii_ply(VALID_PTS))
    for pos, mask in flips:
        data[pos % len(data)] ^= mask
    cloud = _read_cloud(tmp_path_factory.mktemp("ply"), bytes(data), "f.ply")
    if cloud is not None:  # a flip inside a number changes it; the count and finiteness still hold
        assert cloud.points.shape[1] == 3 and np.isfinite(cloud.points).all()
        header = bytes(data).split(b"end_header")[0]
        assert f"vertex {len(cloud)}".encode() in header


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png_bytes()


def _read_png(tmp: Path, data: bytes):
    from shared.image.io import ImageInputError, read_image

    path = tmp / "x.png"
    path.write_bytes(data)
    try:
        return read_image(path)
    except (ImageInputError, FileNotFoundError) as exc:
        assert str(path) in str(exc)
        return None


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len(PNG) - 1))
def test_truncated_png_is_refused_or_exact(tmp_path_factory, cut):
    """A cut before the pixel data ends is refused; one after it (only IEND lost) reads the
    very same pixels: never wrong data."""
    x = _read_png(tmp_path_factory.mktemp("png"), PNG[:cut])
    if x is not None:
        assert torch.equal(x, _read_png(tmp_path_factory.mktemp("png"), PNG))


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
                      min_size=1, max_size=4))
def test_byte_flips_in_a_png_give_an_error_or_a_valid_image(tmp_path_factory, flips):
    data = bytearray(PNG)
    for pos, mask in flips:
        data[pos % len(data)] ^= mask
    x = _read_png(tmp_path_factory.mktemp("png"), bytes(data))
    if x is not None:
        assert isinstance(x, torch.Tensor) and torch.isfinite(x).all() and 0 <= float(x.min()) <= float(x.max()) <= 1


def _text_cloud() -> bytes:
    return "".join(f"{x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in VALID_PTS).encode()


@FUZZ
@given(cut=st.integers(min_value=0, max_value=2000), flips=st.lists(
    st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)), max_size=3),
    kind=st.sampled_from(["xyz", "npy"]))
def test_text_and_npy_clouds_never_give_a_traceback(tmp_path_factory, cut, flips, kind):
    import io

    if kind == "xyz":
        data = bytearray(_text_cloud())
    else:
        buf = io.BytesIO()
        np.save(buf, VALID_PTS)
        data = bytearray(buf.getvalue())
    data = data[: max(1, len(data) - cut)]
    for pos, mask in flips:
        data[pos % len(data)] ^= mask
    cloud = _read_cloud(tmp_path_factory.mktemp("c"), bytes(data), f"c.{kind}")
    if cloud is not None:
        assert cloud.points.shape[1] == 3 and np.isfinite(cloud.points).all()


def _ktc_reference_bytes() -> bytes:
    import io

    from scipy.io import savemat

    from eit.patterns import synthetic_patterns

    inj, mpat = synthetic_patterns(32)
    uel = np.random.default_rng(0).standard_normal(inj.shape[1] * mpat.shape[1])[:, None]
    buf = io.BytesIO()
    savemat(buf, {"Injref": inj, "Mpat": mpat, "Uelref": uel})
    return buf.getvalue()


@FUZZ
@given(cut=st.integers(min_value=1, max_value=4000), flips=st.lists(
    st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)), max_size=3))
def test_ktc_reference_files_never_give_a_traceback(tmp_path_factory, cut, flips):
    from eit.ktc import load_reference

    data = bytearray(_ktc_reference_bytes())
    data = data[: max(1, len(data) - cut)] if cut < 4000 else data
    for pos, mask in flips:
        data[pos % len(data)] ^= mask
    folder = tmp_path_factory.mktemp("ktc")
    (folder / "ref.mat").write_bytes(bytes(data))
    try:
        ref = load_reference(folder)
    except (ValueError, FileNotFoundError) as exc:
        assert "ref.mat" in str(exc)
        return
    assert ref.uel.size == ref.inj.shape[1] * ref.mpat.shape[1]


def test_a_mat_file_that_crashes_scipys_reader_is_refused_with_a_message(tmp_path):
    """This truncated, bit-flipped reference file makes ``scipy.io.loadmat`` die with a
    segmentation fault (found by the fuzz test above, which it made flaky); the loader
    reads in a child process and names the file instead of taking the CLI down."""
    from eit.ktc import load_reference

    data = bytearray(_ktc_reference_bytes())[:-174]
    for pos, mask in [(732766, 199), (771605, 105), (543850, 150)]:
        data[pos % len(data)] ^= mask
    (tmp_path / "ref.mat").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"ref\.mat is not a readable MATLAB .mat file"):
        load_reference(tmp_path)
