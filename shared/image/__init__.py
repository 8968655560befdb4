"""Image front end: deep image prior restoration (denoise, inpaint, super-resolve, deblur,
compressed sensing, sparse-view CT) on PNG/JPEG images.

* :mod:`shared.image.tasks` -- each task as a :class:`Problem`: physics ``A``
  (:mod:`shared.operators`), measurements ``y``, reference; the prior networks
  (:data:`NETS`, :func:`make_network`).
* :mod:`shared.image.dip` -- :class:`DeepImagePrior`, the reconstructor: settings at
  construction, ``reconstruct(problem) -> shared.result.Result``.
* :mod:`shared.image.uncertainty_maps` -- pixelwise linearised-Laplace std of a result.
* :mod:`shared.image.edip` -- educated DIP for sparse-view CT (pretraining, fine-tuning).
* :mod:`shared.image.experiments` -- the fitting-curve experiments behind the DIP's claims.
* :mod:`shared.image.iterative` -- TV reconstruction by primal-dual splitting (baseline).
* :mod:`shared.image.io`, :mod:`shared.image.figures`, :mod:`shared.image.phantoms` --
  reading/writing images, figures, CT phantoms.
* :mod:`shared.image.cli` -- the ``untrained image ...`` subcommands.

Example::

    from shared.image import NETS, DeepImagePrior, denoise_problem

    problem = denoise_problem(image, multiple=NETS["skip"].multiple, sigma=25 / 255, simulate=True)
    result = DeepImagePrior(net="skip").reconstruct(problem)
    result.write("out/")
"""
from shared.image.dip import HELDOUT_FRACTION, OUTPUT_FILES, STOPPING, DeepImagePrior
from shared.image.io import (Geometry, ImageInputError, centre_crop, fit_to_multiple, read_image, read_mask,
                             resize, to_array, to_grey, to_tensor, validate_array, write_image)
from shared.image.phantoms import random_ellipses, shepp_logan
from shared.image.tasks import (NETS, TASK_DEFAULTS, NetSpec, Problem, cs_problem, ct_problem, deblur_problem,
                                denoise_problem, inpaint_problem, make_network, superres_problem)
from shared.image.uncertainty_maps import image_uncertainty, known_noise_std

__all__ = [
    "DeepImagePrior", "STOPPING", "HELDOUT_FRACTION", "OUTPUT_FILES",
    "Problem", "NetSpec", "NETS", "TASK_DEFAULTS", "make_network",
    "denoise_problem", "inpaint_problem", "superres_problem", "deblur_problem", "cs_problem", "ct_problem",
    "image_uncertainty", "known_noise_std",
    "read_image", "read_mask", "write_image", "validate_array", "to_tensor", "to_array", "to_grey", "resize",
    "centre_crop", "fit_to_multiple", "Geometry", "ImageInputError",
    "shepp_logan", "random_ellipses",
]
