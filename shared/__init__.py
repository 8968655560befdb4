"""untrained: untrained neural priors for inverse problems (core package).

The core knows nothing of point clouds or finite elements: it holds the fitting engine
(:func:`shared.fit.fit`), stopping rules, network families, linear operators with
adjoints, regularisers, metrics and uncertainty.  Front ends (``shared.image``,
``geoprior``, ``eit``) hand it a prior network, a forward model and a data term.
"""
from shared.fit import FitResult, fit

__version__ = "0.1.0"
__all__ = ["fit", "FitResult", "__version__"]
