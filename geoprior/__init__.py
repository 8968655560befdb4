"""Deep geometric prior surface reconstruction (Williams et al., CVPR 2019), CPU-friendly.

A noisy point cloud is covered by overlapping patches; every patch gets its own small
ReLU MLP chart ``phi_i: [0, 1]^2 -> R^3`` fitted to the patch points by an Earth Mover's
distance; all charts are one batched network fitted by :func:`shared.fit.fit`.  The
charts are made to agree where they overlap, densely sampled with normals from their
Jacobians, oriented consistently and meshed by screened Poisson.

Modules: :mod:`.io` (clouds in/out), :mod:`.clean` (isolated input points), :mod:`.cover` (patches), :mod:`.charts` (the
batched prior), :mod:`.emd` (matching losses), :mod:`.consistency`, :mod:`.sampling`
(dense output, normals, orientation), :mod:`.mesh`, :mod:`.metrics`,
:mod:`.reconstruct` (the pipeline), :mod:`.cli`.
"""
