"""Image front end: deep image prior restoration (denoise, inpaint, super-resolve, deblur,
compressed sensing, sparse-view CT) on PNG/JPEG images.

* :mod:`shared.image.io` -- reading, validating, padding/cropping and writing images.
* :mod:`shared.image.tasks` -- each task as forward operator + prior network, fitted by
  :func:`shared.fit.fit`.
* :mod:`shared.image.figures` -- side-by-side and fitting-curve figures.
* :mod:`shared.image.cli` -- the ``untrained image ...`` subcommands.
"""
