"""Kuopio Tomography Challenge 2023 data: loaders, validation, difficulty levels.

The challenge's water tank (radius 0.115 m) has ``L = 32`` electrodes.  One data set is

* ``Inj`` (``L x N``): the current (A, up to a common scale) driven through each electrode
  for each of the ``N = 76`` injections (only odd electrodes inject; columns sum to 0);
* ``Mpat`` (``L x M``): the measurement pattern; measurement ``m`` of an injection is
  ``sum_l Mpat[l, m] U_l`` (``M = 31`` adjacent-electrode differences);
* ``Uel`` (``N * M``): the measured voltages, injection-major: entry ``n * M + m`` is
  measurement ``m`` of injection ``n``.

``ref.mat`` holds the same for the tank with water only (``Injref``, ``Mpat``, ``Uelref``),
``data<k>.mat`` a target (``Inj``, ``Mpat``, ``Uel``) and ``true<k>.mat`` its
256x256 segmentation ``truth`` (0 water, 1 resistive, 2 conductive).

Non-finite voltages (NaN) are missing measurements: every loader returns a boolean mask
``observed`` beside the voltages.  Difficulty level ``k = 1..7`` removes the data of
electrodes ``1..2(k-1)`` (1-based): each measurement whose pattern uses one of them and
each injection that drives one of them (:func:`level_mask`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "KTCData",
    "KTCTarget",
    "load_mat",
    "load_reference",
    "load_measurements",
    "load_truth",
    "load_target",
    "level_mask",
    "removed_electrodes",
    "noise_std",
    "N_ELECTRODES",
    "LEVELS",
]

N_ELECTRODES = 32
LEVELS = range(1, 8)


@dataclass
class KTCData:
    """One set of tank measurements.

    Attributes
    ----------
    inj: ``(L, N)`` injected currents.
    mpat: ``(L, M)`` measurement pattern.
    uel: ``(N * M,)`` voltages, injection-major; NaN where missing.
    observed: ``(N * M,)`` True where ``uel`` is finite.
    path: the file it came from.
    """

    inj: np.ndarray
    mpat: np.ndarray
    uel: np.ndarray
    observed: np.ndarray
    path: Path | None = None

    @property
    def n_electrodes(self) -> int:
        return self.inj.shape[0]

    @property
    def n_injections(self) -> int:
        return self.inj.shape[1]

    @property
    def n_patterns(self) -> int:
        return self.mpat.shape[1]


@dataclass
class KTCTarget:
    """A target of the training set, with its reference (water-only) measurements.

    ``mask`` combines the observed entries of both data sets with the difficulty level.
    """

    data: KTCData
    reference: KTCData
    level: int
    mask: np.ndarray
    truth: np.ndarray | None = None
    name: str = ""
    extras: dict = field(default_factory=dict)

    @property
    def difference(self) -> np.ndarray:
        """``Uel - Uelref`` (NaN where either is missing)."""
        return self.data.uel - self.reference.uel


def load_mat(path: str | Path) -> dict[str, np.ndarray]:
    """Read the variables of a MATLAB file (v5, or v7.3 through h5py); clear errors.

    scipy's v5 reader can crash the interpreter on a corrupt file (a segmentation fault in
    ``scipy.io.matlab._mio5_utils``: two crashes in under 12,000 randomly truncated and
    bit-flipped KTC reference files, measured), so where the platform can fork it reads in a
    child process, and a crash there is a ``ValueError`` naming the file here.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    status, value = _read_mat_isolated(path)
    if status == "v7.3":  # MATLAB v7.3 files are HDF5
        raw = _load_mat73(path)
    elif status == "error":
        raise ValueError(f"{path} is not a readable MATLAB .mat file ({value})")
    else:
        raw = value
    return {k: v for k, v in raw.items() if not k.startswith("__")}


def _read_mat(path: Path) -> tuple[str, Any]:
    """``("ok", variables)``, ``("v7.3", None)`` or ``("error", message)`` of scipy's reader."""
    from scipy.io import loadmat

    try:
        return "ok", loadmat(str(path))
    except NotImplementedError:
        return "v7.3", None
    except Exception as exc:  # scipy raises ValueError/TypeError on garbage
        return "error", str(exc) or type(exc).__name__


def _read_in_child(path: Path, conn: Any) -> None:
    conn.send(_read_mat(path))
    conn.close()


def _read_mat_isolated(path: Path) -> tuple[str, Any]:
    """:func:`_read_mat` in a forked child process (in this one where fork is not available)."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        return _read_mat(path)
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_read_in_child, args=(path, send), daemon=True)
    child.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:  # the child died before answering
        child.join()
        return "error", f"the MATLAB reader crashed on it (exit code {child.exitcode}); the file is corrupt"
    finally:
        receive.close()
    child.join()
    return result


def _load_mat73(path: Path) -> dict[str, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            # h5py sees MATLAB's column-major arrays transposed.
            return {k: np.array(f[k]).T for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    except Exception as exc:  # a truncated or corrupt HDF5 body
        raise ValueError(f"{path} is not a readable MATLAB v7.3 (HDF5) .mat file ({exc})") from None


def _field(variables: dict, path: Path, *names: str) -> np.ndarray:
    for name in names:
        if name in variables:
            return np.asarray(variables[name])
    raise ValueError(f"{path} has no variable {' or '.join(repr(n) for n in names)}; it has {sorted(variables)}")


def _validate(inj: np.ndarray, mpat: np.ndarray, uel: np.ndarray, path: Path, names=("Inj", "Mpat", "Uel")) -> KTCData:
    i_name, m_name, u_name = names
    if inj.ndim != 2:
        raise ValueError(f"{path}: {i_name} must be a 2-D array (electrodes x injections), got shape {inj.shape}")
    if mpat.ndim != 2:
        raise ValueError(f"{path}: {m_name} must be a 2-D array (electrodes x measurements), got shape {mpat.shape}")
    if inj.shape[0] != mpat.shape[0]:
        raise ValueError(
            f"{path}: {i_name} has {inj.shape[0]} rows (electrodes) but {m_name} has {mpat.shape[0]}; "
            "both must have one row per electrode"
        )
    if inj.shape[0] < 2:
        raise ValueError(f"{path}: {i_name} must have at least 2 electrodes (rows), got {inj.shape[0]}")
    if not np.all(np.isfinite(inj)) or not np.all(np.isfinite(mpat)):
        raise ValueError(f"{path}: {i_name} and {m_name} must be finite")
    uel = np.asarray(uel, dtype=np.float64)
    if uel.ndim == 2 and 1 in uel.shape:
        uel = uel.reshape(-1)
    expected = inj.shape[1] * mpat.shape[1]
    if uel.ndim != 1 or uel.size != expected:
        raise ValueError(
            f"{path}: {u_name} must hold {inj.shape[1]} injections x {mpat.shape[1]} measurements = {expected} "
            f"values (a column vector), got shape {np.shape(uel)}"
        )
    observed = np.isfinite(uel)
    if not observed.any():
        raise ValueError(f"{path}: every value of {u_name} is missing (NaN/Inf)")
    uel = np.where(observed, uel, np.nan)
    return KTCData(inj.astype(np.float64), mpat.astype(np.float64), uel, observed, path)


def reference_patterns() -> tuple[np.ndarray, np.ndarray] | None:
    """``(Injref, Mpat)`` of the shared KTC training folder's ``ref.mat``, or None when the
    challenge data are absent (``../shared/data/eit/ktc2023/training`` or ``$UNTRAINED_DATA``)."""
    from shared.paths import shared_data_dir

    root = shared_data_dir()
    ref = None if root is None else root / "eit" / "ktc2023" / "training" / "ref.mat"
    if ref is None or not ref.is_file():
        return None
    d = load_mat(ref)
    return d["Injref"].astype(float), d["Mpat"].astype(float)


def load_reference(folder: str | Path) -> KTCData:
    """``ref.mat`` of a KTC folder (``Injref``, ``Mpat``, ``Uelref``): the water-only tank."""
    folder = Path(folder)
    if folder.is_file():
        raise NotADirectoryError(f"--ktc {folder} is a file; expected the KTC folder that holds ref.mat and "
                                 f"data<N>.mat (e.g. {folder.parent})")
    if not folder.is_dir():
        raise FileNotFoundError(f"KTC folder {folder} does not exist")
    path = folder / "ref.mat"
    if not path.is_file():
        raise FileNotFoundError(
            f"the KTC folder {folder} has no ref.mat (the water-only reference measurement with Injref, Mpat, Uelref)"
        )
    v = load_mat(path)
    return _validate(_field(v, path, "Injref", "Inj"), _field(v, path, "Mpat"), _field(v, path, "Uelref", "Uel"),
                     path, ("Injref", "Mpat", "Uelref"))


def load_measurements(path: str | Path) -> KTCData:
    """A ``data<k>.mat`` file (``Inj``, ``Mpat``, ``Uel``)."""
    path = Path(path)
    v = load_mat(path)
    return _validate(_field(v, path, "Inj"), _field(v, path, "Mpat"), _field(v, path, "Uel"), path)


def load_truth(path: str | Path) -> np.ndarray:
    """A ``true<k>.mat`` segmentation: ``truth``, 256x256, values in {0, 1, 2} (uint8)."""
    path = Path(path)
    v = load_mat(path)
    truth = _field(v, path, "truth")
    if truth.shape != (256, 256):
        raise ValueError(f"{path}: truth must be a 256x256 image, got shape {truth.shape}")
    if not np.all(np.isin(truth, (0, 1, 2))):
        raise ValueError(f"{path}: truth must hold only 0 (water), 1 (resistive), 2 (conductive); "
                         f"found {np.unique(truth)[:10]}")
    return truth.astype(np.uint8)


def removed_electrodes(level: int, n_electrodes: int = N_ELECTRODES) -> np.ndarray:
    """0-based indices of the electrodes whose data level ``level`` removes: ``0..2(level-1)-1``."""
    if int(level) != level or not 1 <= level <= 7:
        raise ValueError(f"difficulty level must be an integer 1..7, got {level}")
    return np.arange(min(2 * (int(level) - 1), n_electrodes))


def level_mask(inj: np.ndarray, mpat: np.ndarray, level: int) -> np.ndarray:
    """Kept measurements at a difficulty level, injection-major ``(N * M,)`` booleans.

    A measurement ``(n, m)`` is removed when injection ``n`` drives a removed electrode
    (``Inj[l, n] != 0``) or when pattern ``m`` uses one (``Mpat[l, m] != 0``).
    """
    inj = np.asarray(inj)
    mpat = np.asarray(mpat)
    if inj.shape[0] != mpat.shape[0]:
        raise ValueError(f"Inj has {inj.shape[0]} electrodes (rows) but Mpat has {mpat.shape[0]}")
    gone = removed_electrodes(level, inj.shape[0])
    inj_kept = ~np.any(inj[gone] != 0, axis=0)  # (N,)
    meas_kept = ~np.any(mpat[gone] != 0, axis=0)  # (M,)
    return (inj_kept[:, None] & meas_kept[None, :]).reshape(-1)


def noise_std(u: np.ndarray, relative: float = 0.05, of_max: float = 0.01,
              mask: np.ndarray | None = None) -> np.ndarray:
    """Standard deviation of the organisers' noise model, per measurement.

    ``s_i = sqrt((relative * |u_i|)^2 + (of_max * max_j |u_j|)^2)``: a part proportional
    to each value plus a floor proportional to the largest value (the maximum taken over
    the finite entries, or those in ``mask``).
    """
    u = np.asarray(u, dtype=np.float64)
    sel = np.isfinite(u) if mask is None else (np.asarray(mask, bool) & np.isfinite(u))
    if not sel.any():
        raise ValueError("noise_std needs at least one finite measurement")
    umax = np.abs(u[sel]).max()
    s = np.sqrt((relative * np.abs(np.nan_to_num(u))) ** 2 + (of_max * umax) ** 2)
    if not np.all(s > 0):
        raise ValueError("the noise model gives a zero standard deviation (all measurements are 0?)")
    return s


def _target_index(name: str | int) -> str:
    s = str(name)
    m = re.fullmatch(r"(?:data)?(\d+)(?:\.mat)?", s)
    if not m:
        raise ValueError(f"a KTC target is a number like 1 or 'data1', got {name!r}")
    return m.group(1)


def load_target(folder: str | Path, target: str | int, level: int = 1) -> KTCTarget:
    """Load ``ref.mat``, ``data<target>.mat`` and (if present) ``true<target>.mat`` of a folder.

    Checks that the target was measured with the reference's patterns (same ``Mpat`` and
    ``Inj``) and builds the mask of the measurements to use at ``level``.
    """
    folder = Path(folder)
    ref = load_reference(folder)
    k = _target_index(target)
    path = folder / f"data{k}.mat"
    if not path.is_file():
        raise FileNotFoundError(f"the KTC folder {folder} has no data{k}.mat")
    data = load_measurements(path)
    if data.mpat.shape != ref.mpat.shape or not np.array_equal(data.mpat, ref.mpat):
        raise ValueError(f"{path}: Mpat {data.mpat.shape} differs from the Mpat of {ref.path} {ref.mpat.shape}; "
                         "difference data need the same measurement pattern")
    if data.inj.shape != ref.inj.shape or not np.allclose(data.inj, ref.inj):
        raise ValueError(f"{path}: Inj {data.inj.shape} differs from Injref of {ref.path} {ref.inj.shape}; "
                         "difference data need the same injections")
    mask = level_mask(data.inj, data.mpat, level) & data.observed & ref.observed
    if not mask.any():
        raise ValueError(f"no measurement of {path} is left at level {level}")
    truth_path = folder / f"true{k}.mat"
    truth = load_truth(truth_path) if truth_path.is_file() else None
    return KTCTarget(data=data, reference=ref, level=int(level), mask=mask, truth=truth, name=f"data{k}")
