"""Plasticity, forgetting and calibration metrics: pure functions, tested against their formulas.

Three modules, no state, no logging (the logger decides tags and frequency):

``crl.metrics.plasticity``
    Functions of tensors taken on a fixed probe batch: dormant units (ReDo, Sokar et al.
    2023; Dohare et al. 2024's active-on-fewer-than-1%-of-inputs), fraction of active units,
    rank measures of the feature matrix (``srank_delta`` of Kumar et al. 2021, effective rank
    of Roy & Vetterli 2007, classical stable rank), feature norm and per-unit variance, weight
    norm, mean |w| (Dohare et al. 2024) and RMS weight magnitude, drift (Frobenius and RMS,
    Plasticine), the relative update ``||dW||/||W||``, NaP's effective learning rate of a
    scale-invariant weight (Lyle et al. 2024), predictive entropy, and the probe-task
    plasticity of Lyle et al. 2023 (:func:`~crl.metrics.plasticity.plasticity_probe`).

``crl.metrics.forgetting``
    Functions of the eval matrix ``R[i, j]`` (score on task ``j`` after training task ``i``,
    0-indexed): average final score, forgetting in its two forms (max - last of Chaudhry et
    al. 2018; first - last of Avalanche / Continual World), backward and forward transfer
    (Lopez-Paz & Ranzato 2017), per-task return normalisation, CORA's isolated forgetting and
    zero-shot transfer (Powers et al. 2022), and :func:`~crl.metrics.forgetting.summarize`.

``crl.metrics.calibration``
    Expected calibration error (Guo et al. 2017, 15 equal-width bins) and post-hoc
    recalibration fitted on a held-out split: h-calibration (Huang et al. 2025) and temperature
    scaling (:func:`~crl.metrics.calibration.recalibrate`).

Every metric names its variant (``tau``, ``delta``, forgetting form) in its docstring; the
logged tag should carry it too, e.g. ``plasticity/dormant_redo_tau0.025`` or
``plasticity/srank_0.01``. Inputs a user can get wrong (NaN/inf, wrong shapes, bad
arguments) raise :class:`crl.errors.UserError` with a one-line message.
"""
