"""KTC loaders, validation, missing data, difficulty levels, phantoms."""
import numpy as np
import pytest
from scipy.io import savemat

from eit import ktc
from eit.patterns import adjacent_currents, adjacent_differences, synthetic_patterns
from eit.phantoms import Circle, Phantom, Polygon, add_noise, random_phantom, two_disks, two_inclusion


def _patterns(L=32):
    """KTC-like patterns: odd electrodes inject in pairs; adjacent differences."""
    odd = np.arange(0, L, 2)
    inj = []
    for a in range(len(odd) - 1):
        col = np.zeros(L)
        col[odd[a]], col[odd[a + 1]] = 1.0, -1.0
        inj.append(col)
    inj = np.array(inj).T  # (L, 15)
    return inj, adjacent_differences(L)


def _write_folder(folder, uel=None, inj=None, mpat=None, ref=True):
    inj0, mpat0 = _patterns()
    inj = inj0 if inj is None else inj
    mpat = mpat0 if mpat is None else mpat
    n = inj0.shape[1] * mpat0.shape[1]
    rng = np.random.default_rng(0)
    if ref:
        savemat(folder / "ref.mat", {"Injref": inj0, "Mpat": mpat0, "Uelref": rng.normal(size=(n, 1))})
    savemat(folder / "data1.mat", {"Inj": inj, "Mpat": mpat, "Uel": rng.normal(size=(n, 1)) if uel is None else uel})
    return inj0, mpat0


@pytest.mark.data
def test_real_loader_shapes(shared_data):
    folder = shared_data / "eit" / "ktc2023" / "training"
    t = ktc.load_target(folder, 1, level=1)
    assert t.data.inj.shape == (32, 76) and t.data.mpat.shape == (32, 31)
    assert t.data.uel.shape == (2356,) and t.reference.uel.shape == (2356,)
    assert t.truth.shape == (256, 256) and t.truth.dtype == np.uint8
    assert set(np.unique(t.truth)) == {0, 1, 2}
    assert t.mask.all()
    # Level 7 removes electrodes 1..12: far fewer measurements, none touching them.
    t7 = ktc.load_target(folder, "data1", level=7)
    assert 0 < t7.mask.sum() < 0.3 * t7.mask.size


def test_nan_measurements_are_missing(tmp_path):
    inj, mpat = _patterns()
    uel = np.random.default_rng(1).normal(size=(inj.shape[1] * mpat.shape[1], 1))
    uel[[3, 10, 200]] = np.nan
    _write_folder(tmp_path, uel=uel)
    t = ktc.load_target(tmp_path, 1)
    assert not t.data.observed[[3, 10, 200]].any() and t.data.observed.sum() == uel.size - 3
    assert not t.mask[[3, 10, 200]].any() and t.mask.sum() == uel.size - 3
    s = ktc.noise_std(t.data.uel)  # NaN does not poison the noise model
    assert np.all(np.isfinite(s)) and np.all(s > 0)


def test_all_nan_rejected(tmp_path):
    inj, mpat = _patterns()
    _write_folder(tmp_path, uel=np.full((inj.shape[1] * mpat.shape[1], 1), np.nan))
    with pytest.raises(ValueError, match="every value of Uel is missing"):
        ktc.load_target(tmp_path, 1)


def test_missing_ref_mat(tmp_path):
    _write_folder(tmp_path, ref=False)
    with pytest.raises(FileNotFoundError, match=r"has no ref\.mat") as err:
        ktc.load_target(tmp_path, 1)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ktc.load_reference(tmp_path / "nowhere")


def test_wrong_shapes_rejected(tmp_path):
    inj, mpat = _patterns()
    _write_folder(tmp_path, uel=np.zeros((100, 1)))
    with pytest.raises(ValueError, match=r"Uel must hold 15 injections x 31 measurements = 465"):
        ktc.load_target(tmp_path, 1)


def test_mismatched_inj_mpat_rejected(tmp_path):
    inj, mpat = _patterns()
    _write_folder(tmp_path, inj=inj[:30])
    with pytest.raises(ValueError, match="Inj has 30 rows .* Mpat has 32"):
        ktc.load_target(tmp_path, 1)


def test_pattern_differs_from_reference(tmp_path):
    inj, mpat = _patterns()
    _write_folder(tmp_path, mpat=-mpat)
    with pytest.raises(ValueError, match="Mpat .* differs from the Mpat"):
        ktc.load_target(tmp_path, 1)


def test_bad_truth(tmp_path):
    savemat(tmp_path / "true1.mat", {"truth": np.zeros((100, 100), np.uint8)})
    with pytest.raises(ValueError, match="256x256"):
        ktc.load_truth(tmp_path / "true1.mat")
    savemat(tmp_path / "true2.mat", {"truth": np.full((256, 256), 7, np.uint8)})
    with pytest.raises(ValueError, match="only 0"):
        ktc.load_truth(tmp_path / "true2.mat")
    (tmp_path / "junk.mat").write_text("not a mat file")
    with pytest.raises(ValueError, match="not a readable MATLAB"):
        ktc.load_mat(tmp_path / "junk.mat")


def test_level_masks():
    inj, mpat = _patterns()
    M = mpat.shape[1]
    full = ktc.level_mask(inj, mpat, 1)
    assert full.all()
    prev = full.sum()
    for level in range(2, 8):
        keep = ktc.level_mask(inj, mpat, level).reshape(inj.shape[1], M)
        gone = ktc.removed_electrodes(level)
        assert list(gone) == list(range(2 * (level - 1)))
        # No kept measurement touches a removed electrode, through the injection or the pattern.
        for n, m in zip(*np.nonzero(keep)):
            assert not np.any(inj[gone, n]) and not np.any(mpat[gone, m])
        # Every removed one does.
        for n, m in zip(*np.nonzero(~keep)):
            assert np.any(inj[gone, n]) or np.any(mpat[gone, m])
        assert keep.sum() < prev
        prev = keep.sum()
    with pytest.raises(ValueError, match="1..7"):
        ktc.level_mask(inj, mpat, 8)


def test_noise_model():
    u = np.array([1.0, -2.0, 0.5, np.nan])
    s = ktc.noise_std(u, 0.05, 0.01)
    np.testing.assert_allclose(s[:3], np.sqrt((0.05 * np.abs(u[:3])) ** 2 + 0.02**2))
    noisy, s2 = add_noise(np.ones(20000), np.random.default_rng(0), 0.05, 0.0)
    assert abs(np.std(noisy - 1) - 0.05) < 0.002


def test_phantoms():
    p = Phantom(1.0, [Circle(0.0, 0.0, 0.05, 3.0), Polygon(((0.06, 0.0), (0.1, 0.0), (0.1, 0.04)), 0.2)])
    pts = np.array([[0.0, 0.0], [0.09, 0.01], [0.09, 0.035], [-0.1, 0.0]])
    np.testing.assert_allclose(p(pts), [3.0, 0.2, 1.0, 1.0])
    np.testing.assert_array_equal(p.classes(pts), [2, 1, 0, 0])
    with pytest.raises(ValueError, match="positive"):
        Phantom(1.0, [Circle(0, 0, 0.01, -1.0)])
    two = two_inclusion()
    assert set(np.unique(two.classes(np.random.default_rng(0).uniform(-0.1, 0.1, (5000, 2))))) == {0, 1, 2}
    rp = random_phantom(np.random.default_rng(3), n_inclusions=3)
    assert len(rp.inclusions) == 3
    disks = two_disks()
    x, y = np.array([[0.04, -0.05], [0.0, 0.1]]), np.array([[0.03, -0.02], [0.0, 0.0]])
    np.testing.assert_allclose(disks.at(x, y), [[0.1, 3.0], [0.8, 0.8]])


def test_patterns():
    I = adjacent_currents(4, amplitude=2.0)
    np.testing.assert_array_equal(I[:, 3], [-2.0, 0.0, 0.0, 2.0])  # cyclic: electrode 3 to 0
    G = adjacent_differences(4)
    np.testing.assert_array_equal(G.T @ np.array([1.0, 2.0, 4.0, 8.0]), [-1.0, -2.0, -4.0])
    inj, mpat = synthetic_patterns(32)
    assert inj.shape == (32, 29) and np.allclose(inj.sum(0), 0) and not inj[1::2].any()
    np.testing.assert_array_equal(mpat, adjacent_differences(32))
    with pytest.raises(ValueError, match="even number"):
        synthetic_patterns(7)
