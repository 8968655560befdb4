"""The forward solve under MPI (2 ranks, distributed DOLFINx/PETSc) gives the serial data."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eit.parallel import find_mpiexec
from eit.patterns import adjacent_currents, adjacent_differences
from eit.phantoms import two_disks

ROOT = Path(__file__).resolve().parent.parent


def test_two_ranks_match_serial_cem(tmp_path):
    mpiexec = find_mpiexec()
    if mpiexec is None:
        pytest.skip("no mpiexec found beside the Python interpreter or on PATH (the MPICH "
                    "that the DOLFINx wheel brings installs one in the venv's bin)")
    from eit.forward import CEM
    from eit.mesh import ktc_mesh

    out = tmp_path / "mpi2.npz"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # The example script is the program under test: run it on 2 ranks (not imported here).
    proc = subprocess.run(
        [mpiexec, "-n", "2", sys.executable, str(ROOT / "examples" / "eit_forward_mpi.py"),
         "--out", str(out)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ranks=2" in proc.stdout
    par = np.load(out)

    mesh = ktc_mesh("1500")
    L = mesh.n_electrodes
    model = CEM(mesh, adjacent_currents(L, amplitude=1e-3), adjacent_differences(L), z=1e-6)
    c = model.cell_centroids
    sigma = two_disks().at(c[:, 0], c[:, 1])
    data = model.forward(sigma)
    # z = 1e-6 makes the CEM system stiff (condition ~1e9): distributed and serial LU agree
    # to ~1e-7 relative, depending on pivoting, which is the accuracy either can claim.
    np.testing.assert_allclose(par["data"], data, rtol=0, atol=1e-6 * np.abs(data).max())
    dv = np.cos(np.arange(model.n_data))
    gh = model.vjp(sigma, dv) @ (1.0 + 10.0 * c[:, 0] - 5.0 * c[:, 1])
    assert abs(float(par["grad_h"]) - gh) < 1e-6 * abs(gh)
