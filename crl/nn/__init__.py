"""Network building blocks: norms, torsos, value heads, SoftMoE and the network builder."""
from crl.nn import heads, norms, torsos  # noqa: F401  (registration)
