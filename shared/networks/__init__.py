"""Network families used as untrained priors."""
from shared.networks.mlp import MLP, BatchedMLP, FourierFeatures

__all__ = ["MLP", "BatchedMLP", "FourierFeatures"]
