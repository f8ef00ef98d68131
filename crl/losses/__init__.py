"""Classification losses of the classifier learner (``--loss``), one file each.

Each module registers its entry in :data:`crl.registry.LOSSES` with
``@LOSSES.register(name, help, options=...)``; the factory is ``(cfg) -> ClassificationLoss``
(:mod:`crl.losses.base`): ``loss(logits, targets, mask=None)`` returns one term per sample
(``per_sample = True``) or one value for the whole group (``per_sample = False``, a loss of
the batch such as AnyLoss's confusion matrix). ``mask`` (N x C booleans) names the classes
each sample's loss may see (ER-ACE's incoming batch, ``--il-mode task``).
"""
from crl.losses import ce  # noqa: F401  (each module registers its entry; ce first: the default)
from crl.losses import zloss  # noqa: F401,I001
from crl.losses import anyloss  # noqa: F401,I001
