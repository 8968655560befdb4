"""Electrical impedance tomography: meshes, forward models, neural conductivities."""
