"""Network families used as untrained priors.

- :mod:`~shared.networks.hourglass`: the deep image prior skip U-Net / hourglass.
- :mod:`~shared.networks.deep_decoder`: the under-parameterised deep decoder.
- :mod:`~shared.networks.conv_generator`: the two-layer generator ``ReLU(U C) v``.
- :mod:`~shared.networks.mlp`: plain and batched ReLU MLPs, Fourier features.
- :mod:`~shared.networks.latent_generator`: a convolutional generator ``z -> x`` and its
  encoder (trained as a VAE; CSGM and IAGAN search or adapt it).
"""
from shared.networks.conv_generator import ConvGenerator, generator_kernel
from shared.networks.deep_decoder import DeepDecoder, deep_decoder_parameter_count
from shared.networks.latent_generator import ConvEncoder, LatentGenerator
from shared.networks.hourglass import (Hourglass, count_parameters, get_noise_input, required_multiple,
                                       skip_light, skip_official)
from shared.networks.mlp import MLP, BatchedMLP, FourierFeatures

__all__ = ["MLP", "BatchedMLP", "FourierFeatures", "Hourglass", "skip_official", "skip_light",
           "get_noise_input", "required_multiple", "count_parameters", "DeepDecoder",
           "deep_decoder_parameter_count", "ConvGenerator", "generator_kernel", "LatentGenerator", "ConvEncoder"]
