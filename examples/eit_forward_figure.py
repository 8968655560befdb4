"""Figure of the EIT forward model: the KTC tank mesh, a CEM potential and a sensitivity map.

    python examples/eit_forward_figure.py --out docs/img/eit_forward.png

Uses no data files: the KTC geometry is built in, the currents are the first KTC-style
injection (electrode 1 to electrode 3, 1 mA) and the conductivity is the two-disk phantom
:func:`eit.phantoms.two_disks` (as in ``examples/eit_forward_mpi.py``).

The complete electrode model (:mod:`eit.forward`): the potential ``u`` and the electrode
potentials ``U_l`` solve ``div(sigma grad u) = 0``, ``u + z_l sigma du/dn = U_l`` and
``int_{e_l} sigma du/dn ds = I_l`` on electrode ``e_l`` (no current elsewhere on the
boundary).  The sensitivity of measurement ``m`` to the conductivity of cell ``c`` is the
Jacobian entry ``-int_c grad u . grad w_m dx`` with ``w_m`` the adjoint field of that
measurement (the field of unit current through its electrode pair).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.tri as mtri  # noqa: E402
import numpy as np  # noqa: E402

import dolfinx_solver  # noqa: E402,F401  (orders MPI before the DOLFINx bindings)

from eit.forward import CEM  # noqa: E402
from eit.mesh import ktc_mesh  # noqa: E402
from eit.patterns import adjacent_differences  # noqa: E402
from eit.phantoms import two_disks  # noqa: E402


def main(out="docs/img/eit_forward.png"):
    # The KTC tank mesh (about 1.5k vertices, 32 electrodes refined at their edges).
    mesh = ktc_mesh("1500")
    L = mesh.n_electrodes
    # One injection, 1 mA from electrode 1 to electrode 3; the 31 adjacent differences.
    I = np.zeros((L, 1))
    I[0, 0], I[2, 0] = 1e-3, -1e-3
    model = CEM(mesh, I, adjacent_differences(L), z=1e-6)
    # The conductivity at the cell centroids (DG0), and one solve.
    c = model.cell_centroids
    sigma = two_disks().at(c[:, 0], c[:, 1])
    sol = model.solve(sigma)
    x = model.vertex_coordinates
    tri = mtri.Triangulation(x[:, 0], x[:, 1], model.fe.cells)
    # sensitivity of the measurement between electrodes 17 and 18 (opposite the injection)
    J = model.jacobian(sol)
    sens = J[16] / model.cell_areas

    fig, ax = plt.subplots(1, 3, figsize=(11, 3.6))
    ax[0].triplot(tri, lw=0.25, color="0.4")
    for l, (a0, a1) in enumerate(mesh.electrode_arcs):
        t = np.linspace(a0, a1, 10)
        ax[0].plot(0.115 * np.cos(t), 0.115 * np.sin(t), lw=3, color="C3" if l else "C0")
    ax[0].set_title(f"KTC tank mesh: {mesh.num_vertices()} vertices,\n32 electrodes "
                    "(electrode 1 blue)", fontsize=9)
    im = ax[1].tripcolor(tri, sol.u[:, 0] * 1e3, shading="gouraud", cmap="RdBu_r")
    ax[1].tricontour(tri, sol.u[:, 0] * 1e3, 20, colors="k", linewidths=0.3)
    ax[1].tricontour(mtri.Triangulation(c[:, 0], c[:, 1]), sigma, [0.3, 1.5],
                     colors=["C2", "C1"], linewidths=1.2)
    fig.colorbar(im, ax=ax[1], shrink=0.8, label="mV")
    ax[1].set_title("CEM potential, 1 mA from electrode 1 to 3\n(resistive: green, "
                    "conductive: orange)", fontsize=9)
    v = np.percentile(np.abs(sens), 99)
    im = ax[2].tripcolor(tri, facecolors=sens, cmap="PuOr", vmin=-v, vmax=v)
    fig.colorbar(im, ax=ax[2], shrink=0.8, label="V / (S/m) / m$^2$")
    ax[2].set_title("adjoint sensitivity of U$_{17}$-U$_{18}$\n(Jacobian row / cell area)",
                    fontsize=9)
    for a in ax:
        a.set_aspect("equal")
        a.axis("off")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img/eit_forward.png")
    main(ap.parse_args().out)
