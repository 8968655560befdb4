"""Deep geometric prior surface reconstruction (Williams et al., CVPR 2019), CPU-friendly.

A noisy point cloud is covered by overlapping patches; every patch gets its own small
ReLU MLP chart ``phi_i: [0, 1]^2 -> R^3``, and all charts are one batched network
``G_theta`` fitted by :func:`shared.fit.fit` to ``D(A(G_theta(u)), y)``: ``A`` the
identity, ``y`` the patch points, ``D`` an Earth Mover's distance between each chart's
samples and its patch's points.  The charts are made to agree where they overlap, densely
sampled with normals from their Jacobians, oriented consistently and meshed by screened
Poisson::

    from geoprior import DeepGeometricPrior
    result = DeepGeometricPrior(radius=0.06, iterations=300).reconstruct(points)
    result.arrays["points"], result.arrays["vertices"], result.arrays["faces"]
    result.write("out/")                 # dense.ply, mesh.ply, input_vs_output.png, metrics.json

Modules: :mod:`.io` (clouds in/out), :mod:`.clean` (isolated input points), :mod:`.cover`
(patches), :mod:`.charts` (the batched prior), :mod:`.emd` (the matching data terms),
:mod:`.consistency`, :mod:`.sampling` (dense output, normals, orientation), :mod:`.mesh`,
:mod:`.metrics`, :mod:`.render` (figures), :mod:`.shapes` (synthetic test shapes),
:mod:`.uncertainty` (linearised Laplace of a chart), :mod:`.reconstruct` (the
reconstructor and its pipeline stages), :mod:`.cli`.
"""
from geoprior.charts import ChartPrior, affine_init, chart_jacobian_normals
from geoprior.cover import Cover, build_cover, build_folded_cover
from geoprior.emd import ExactEMD, SinkhornEMD, emd_exact, exact_assignment
from geoprior.io import Cloud, load_cloud, load_clouds, load_conf, load_mesh, validate_cloud, write_cloud_ply, \
    write_mesh_ply
from geoprior.metrics import evaluate_against_mesh, point_metrics, sample_mesh
from geoprior.reconstruct import DeepGeometricPrior, fit_charts, fit_points
from geoprior.render import render_comparison

__all__ = [
    "DeepGeometricPrior", "fit_charts", "fit_points",
    "ChartPrior", "affine_init", "chart_jacobian_normals",
    "Cover", "build_cover", "build_folded_cover",
    "ExactEMD", "SinkhornEMD", "emd_exact", "exact_assignment",
    "Cloud", "load_cloud", "load_clouds", "load_conf", "load_mesh", "validate_cloud", "write_cloud_ply",
    "write_mesh_ply",
    "evaluate_against_mesh", "point_metrics", "sample_mesh",
    "render_comparison",
]
