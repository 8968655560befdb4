"""Electrical impedance tomography: meshes, forward models, neural conductivities.

The public API, top to bottom (problem/physics -> prior -> reconstructor -> result)::

    import dolfinx_solver                      # before dolfinx / petsc4py
    from eit import simulated_problem, NeuralEIT, OneStep, GaussNewton

    problem = simulated_problem("two-inclusion")          # EITProblem: CEM, y, noise, truth
    result = NeuralEIT(net="mlp", iterations=300).reconstruct(problem)
    result.arrays["sigma"], result.metrics["score"]       # shared.result.Result
    result.write("out/")                                  # sigma_neural-mlp.png/.xdmf, metrics.json

* problems: :class:`EITProblem`, :func:`ktc_problem`, :func:`phantom_problem`,
  :func:`simulated_problem` (:mod:`eit.problem`);
* forward models: :class:`CEM`, :class:`NeumannModel`, :class:`DirichletModel`
  (:mod:`eit.forward`), :class:`ParallelCEM` (:mod:`eit.parallel`, MPI), and the physics
  object the engine fits through, :class:`EITPhysics` (:mod:`eit.physics`);
* meshes, patterns, phantoms: :func:`ktc_mesh`, :func:`disk_mesh`, :func:`polygon_mesh`,
  :func:`adjacent_currents`, :func:`adjacent_differences`, :func:`synthetic_patterns`,
  :class:`Phantom`, :func:`two_inclusion`, :func:`two_disks`, :func:`random_phantom`;
* priors: :class:`MLPConductivity`, :class:`GridConductivity`, :func:`make_prior`;
* reconstructors (:class:`shared.reconstructor.Reconstructor`): :class:`NeuralEIT`,
  :class:`OneStep`, :class:`GaussNewton`, :class:`DBar`, the mesh-free :class:`MeshFreeEIT`
  (on :func:`continuum_problem` data); by name: :func:`make_reconstructor`,
  :func:`run_methods` (:mod:`eit.methods`);
* results and scores: :func:`conductivity_result`, :func:`run_summary`, :func:`ktc_score`,
  :func:`segment`; mesh TV: :class:`MeshTV`, :class:`LogContrastTV`.

The names are loaded on first use (``import eit`` alone loads no DOLFINx, so the ``untrained``
command of the other front ends stays light); the modules that need DOLFINx import
:mod:`dolfinx_solver` first, which orders MPI before the DOLFINx bindings.
"""
from importlib import import_module
from typing import Any

#: public name -> the module that defines it
_EXPORTS = {
    "CEM": "forward", "NeumannModel": "forward", "DirichletModel": "forward",
    "EITPhysics": "physics", "ParallelCEM": "parallel", "conductivity_uncertainty": "uncertainty",
    "EITProblem": "problem", "ktc_problem": "problem", "phantom_problem": "problem",
    "simulated_problem": "problem",
    "ktc_mesh": "mesh", "disk_mesh": "mesh", "polygon_mesh": "mesh",
    "adjacent_currents": "patterns", "adjacent_differences": "patterns", "synthetic_patterns": "patterns",
    "Phantom": "phantoms", "two_inclusion": "phantoms", "two_disks": "phantoms", "random_phantom": "phantoms",
    "MLPConductivity": "conductivity", "GridConductivity": "conductivity", "make_prior": "conductivity",
    "NeuralEIT": "reconstruct", "NEURAL_DEFAULTS": "reconstruct",
    "OneStep": "baselines", "GaussNewton": "baselines", "DBar": "dbar",
    "MeshFreeEIT": "meshfree", "continuum_problem": "meshfree",
    "METHODS": "methods", "make_reconstructor": "methods", "run_methods": "methods",
    "conductivity_result": "result", "run_summary": "result",
    "ktc_score": "score", "segment": "score",
    "MeshTV": "tv", "LogContrastTV": "tv",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f"eit.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'eit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
