"""Torsos: observation -> features. Each file registers one torso in ``TORSOS``.

A torso factory is ``(obs_shape, cfg) -> nn.Module`` and the module has ``out_features``.
Conv torsos (meta ``conv=True``) also expose ``encoder`` (obs -> feature map of shape
``feature_map_shape``) and ``dense`` (the penultimate dense block), so ``--moe softmoe``
can replace ``dense`` by a SoftMoE over per-position tokens.
"""
from crl.nn.torsos import impala, mlp, nature  # noqa: F401  (registration)
from crl.nn.torsos import resnet18, small_cnn  # noqa: F401,E402  (registration; supervised torsos)
from crl.nn.torsos import minatar  # noqa: F401,E402  (registration; MinAtar reference network)
