"""The KTC-like phantom generator and the simulated validation set (eit.phantoms, eit.simulated_set)."""
from collections import Counter

import numpy as np
import pytest

from eit.phantoms import KTC_LIKE, SHAPES, equivalent_radius, ktc_like_phantom
from eit.simulated_set import simulated_set

R = 0.115


@pytest.fixture(scope="module")
def phantoms():
    rng = np.random.default_rng(5)
    return [ktc_like_phantom(rng, R, background=0.8) for _ in range(300)]


def test_object_counts_cover_one_to_three(phantoms):
    counts = Counter(len(p.inclusions) for p in phantoms)
    assert set(counts) == {1, 2, 3}
    assert min(counts.values()) > 60  # each count about a third of the draws


def test_every_shape_occurs_about_equally(phantoms):
    kinds = Counter(s.kind for p in phantoms for s in p.inclusions)
    assert set(kinds) == set(SHAPES)
    assert max(kinds.values()) < 1.6 * min(kinds.values())  # long bars are not rejected away


def test_sizes_and_contrasts_within_their_ranges(phantoms):
    lo, hi = KTC_LIKE["size"]
    sizes = np.array([equivalent_radius(s) / R for p in phantoms for s in p.inclusions])
    assert sizes.min() >= lo - 1e-9 and sizes.max() <= hi + 1e-9
    ratios = np.array([s.sigma / p.background for p in phantoms for s in p.inclusions])
    res, con = ratios[ratios < 1], ratios[ratios > 1]
    assert res.min() >= KTC_LIKE["resistive"][0] and res.max() <= KTC_LIKE["resistive"][1]
    assert con.min() >= KTC_LIKE["conductive"][0] and con.max() <= KTC_LIKE["conductive"][1]
    assert 0.35 < len(con) / len(ratios) < 0.65  # conductive and resistive alike


def test_objects_stay_inside_and_apart(phantoms):
    # Sample each object's region: inside the wall gap, and no pixel claimed by two objects.
    g = np.linspace(-R, R, 161)
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    for p in phantoms[:60]:
        inside = np.array([s.contains(pts) for s in p.inclusions])
        assert inside.sum(axis=0).max() <= 1
        r = np.linalg.norm(pts[inside.any(axis=0)], axis=1)
        assert r.max() <= (1 - KTC_LIKE["wall_gap"]) * R + 1e-9
        assert all(row.any() for row in inside)  # every object covers some area


def test_the_set_is_fixed_and_distinct_per_level():
    a = simulated_set(levels=[1, 7], n_per_level=5)
    b = simulated_set(levels=[1, 7], n_per_level=5)
    assert len(a) == 10 and [c.name for c in a] == [c.name for c in b]
    assert all(np.array_equal(ca.phantom(np.zeros((1, 2))), cb.phantom(np.zeros((1, 2)))) and ca.z == cb.z
               for ca, cb in zip(a, b))
    # the first case of level 1 is not the first case of level 7
    assert a[0].phantom.inclusions != a[5].phantom.inclusions
    # more cases per level leave the first ones unchanged
    c = simulated_set(levels=[1], n_per_level=8)
    assert c[0].z == a[0].z and c[4].seed == a[4].seed
    zs = np.array([case.z for case in a])
    assert zs.min() >= 5e-7 and zs.max() <= 5e-6


def test_bad_set_settings_are_rejected():
    with pytest.raises(ValueError, match="levels are integers 1..7"):
        simulated_set(levels=[8], n_per_level=1)
    with pytest.raises(ValueError, match="n_per_level"):
        simulated_set(levels=[1], n_per_level=0)


def test_a_simulated_case_becomes_a_ktc_like_problem():
    import dolfinx_solver  # noqa: F401  (before dolfinx)

    from eit.forward import CEM
    from eit.ktc import level_mask
    from eit.mesh import ktc_mesh
    from eit.patterns import synthetic_patterns
    from eit.simulated_set import SetSimulator

    inj, mpat = synthetic_patterns(32)
    model = CEM(ktc_mesh("1500"), currents=inj, patterns=mpat, z=1e-6)
    sim = SetSimulator(inj, mpat, n_tanks=1)
    case = simulated_set(levels=[4], n_per_level=1)[0]
    p = sim.problem(case, model)
    assert p.level == 4 and np.array_equal(p.mask, level_mask(inj, mpat, 4))
    assert np.isnan(p.y[~p.mask]).all() and np.isfinite(p.y[p.mask]).all()
    # the fitted water is close to the simulated one (model errors: mesh, electrodes, contact)
    assert abs(p.sigma_bg / case.phantom.background - 1) < 0.1
    # the truth holds the phantom's classes
    kinds = {1 if s.sigma < case.phantom.background else 2 for s in case.phantom.inclusions}
    assert set(np.unique(p.truth)) == {0, *kinds}
    # the same case gives the same data; the tank's electrodes differ from the inversion mesh's
    assert np.array_equal(sim.measure(case)[0], sim.measure(case)[0])
    tank, arcs = sim.tank(0), model.eit_mesh.electrode_arcs
    shift = np.abs(tank.eit_mesh.electrode_arcs.mean(1) - arcs.mean(1))
    assert 1e-4 < shift.max() < 0.03  # rad: moved, by about the stated 0.005 rad
    assert tank.n_sigma > 2 * model.n_sigma  # simulated on a finer mesh
    # the contact-impedance oracle of the setting study: the case's own z in a model of its own
    from eit import evaluate

    evaluate._WORKER.update(model=model, sim=sim)
    try:
        oracle = evaluate._case_problem(case, "difference", "true")
        np.testing.assert_allclose(oracle.model.z, case.z)
        assert np.all(model.z == 1e-6) and not np.allclose(oracle.y[p.mask], p.y[p.mask])
        with pytest.raises(ValueError, match="contact must be"):
            evaluate._case_problem(case, "difference", "measured")
    finally:
        evaluate._WORKER.clear()
