"""Network building blocks: norms, activations, weight reparameterizations, torsos, value heads,
SoftMoE and the network builder; cached walks of a network's modules (``module_walk``)."""
from crl.nn import activations, heads, norms, reparam, torsos  # noqa: F401  (registration)
