"""NaP's learning-rate protocol through ``crl.avalanche.InterventionPlugin("nap")`` in a real Avalanche
``Naive`` strategy: the lr every update uses is the paper's linear warmup then cosine decay over the
experience's updates, restarted at the next experience, on every param group in proportion; with
``nap_schedule=False`` the user's lr is left alone.

Setup: 120 samples (10 classes) in 2 class-incremental experiences of 60; mini-batches of 6 and 4 epochs,
so H = 60 / 6 * 4 = 40 updates per experience and NaP's 1,000-update warmup is cut to H // 10 = 4.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.utils.data import TensorDataset

warnings.filterwarnings("ignore", message="no QP solver")  # qpsolvers, imported by avalanche
pytestmark = pytest.mark.filterwarnings("ignore:No loggers specified")
pytest.importorskip("avalanche")
from avalanche.benchmarks import nc_benchmark  # noqa: E402
from avalanche.core import SupervisedPlugin  # noqa: E402

import crl.avalanche as cav  # noqa: E402
from crl.errors import UserError  # noqa: E402

PEAK, H = 0.05, 40


class _LRRecorder(SupervisedPlugin):
    """Per experience: the lr of each param group that every update uses (read just before the step),
    and the lr left after the experience's last update."""

    def __init__(self):
        super().__init__()
        self.used: list[list[list[float]]] = []
        self.ended: list[list[float]] = []

    def before_training_exp(self, strategy, *args, **kwargs):
        self.used.append([])

    def before_update(self, strategy, *args, **kwargs):
        self.used[-1].append([float(g["lr"]) for g in strategy.optimizer.param_groups])

    def after_training_exp(self, strategy, *args, **kwargs):
        self.ended.append([float(g["lr"]) for g in strategy.optimizer.param_groups])


def _train(plugin) -> _LRRecorder:
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    torch.manual_seed(0)
    model = cav.crl_model((1, 8, 8), 10, norm="nap", mlp_hidden="16")
    out = list(model.output.parameters())
    rest = [p for p in model.parameters() if all(p is not q for q in out)]
    # two param groups: the output layer at a tenth of the peak must stay at a tenth of the schedule
    opt = torch.optim.SGD([{"params": rest}, {"params": out, "lr": PEAK / 10}], lr=PEAK)
    recorder = _LRRecorder()
    strategy = Naive(model=model, optimizer=opt, train_mb_size=6, train_epochs=4, eval_mb_size=60, device="cpu",
                     plugins=[plugin, recorder], evaluator=EvaluationPlugin(loggers=[]))
    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat_interleave(12)
    x = torch.randn(len(y), 1, 8, 8, generator=g)
    bench = nc_benchmark(TensorDataset(x, y), TensorDataset(x, y), n_experiences=2, task_labels=False, seed=1)
    for exp in bench.train_stream:
        strategy.train(exp)
    return recorder


def _nap_lr(k: int, warmup: int, init: float, final: float) -> float:
    """The paper's protocol written out: the lr of update ``k`` (0-based) of an experience of H updates."""
    if k < warmup:
        return init + (PEAK - init) * k / warmup
    return final + (PEAK - final) * (1 + math.cos(math.pi * (k - warmup) / (H - warmup))) / 2


@pytest.mark.parametrize("options, warmup, init, final", [
    ({}, 4, 1e-8, 1e-6),  # NaP's defaults, the warmup cut to a tenth of the 40 updates
    ({"nap_warmup": 2, "nap_init_lr": 1e-3, "nap_final_lr": 1e-4}, 2, 1e-3, 1e-4),
])
def test_nap_plugin_runs_warmup_and_cosine_restarted_per_experience(options, warmup, init, final):
    rec = _train(cav.InterventionPlugin("nap", **options))
    assert [len(u) for u in rec.used] == [H, H]
    for used, after in zip(rec.used, rec.ended):  # experience 2 starts the same segment again
        for k, (lr, lr_out) in enumerate(used):
            assert lr == pytest.approx(_nap_lr(k, warmup, init, final), rel=1e-9, abs=1e-15), k
            assert lr_out == pytest.approx(lr / 10, rel=1e-9), k  # every group in proportion
        assert after == pytest.approx([final, final / 10], rel=1e-9)  # decayed to the end value
    if not options:  # a few values by hand
        used = rec.used[1]
        assert used[0][0] == pytest.approx(1e-8, rel=1e-9)
        assert used[1][0] == pytest.approx(1e-8 + (0.05 - 1e-8) / 4, rel=1e-9)
        assert used[4][0] == pytest.approx(0.05, rel=1e-9)  # the peak, right after the warmup
        assert used[22][0] == pytest.approx((0.05 + 1e-6) / 2, rel=1e-9)  # half-way through the 36 cosine updates


def test_nap_schedule_false_leaves_the_lr_alone():
    rec = _train(cav.InterventionPlugin("nap", nap_schedule=False))
    assert [len(u) for u in rec.used] == [H, H]
    assert all(lrs == [PEAK, PEAK / 10] for used in rec.used for lrs in used)
    assert rec.ended == [[PEAK, PEAK / 10]] * 2


def test_bad_nap_schedule_options_are_one_error():
    with pytest.raises(UserError, match="nap_schedule must be True or False"):
        cav.InterventionPlugin("nap", nap_schedule="yes")
    with pytest.raises(UserError, match="nap-warmup: must be >= 0"):
        cav.InterventionPlugin("nap", nap_warmup=-1)
    with pytest.raises(UserError, match="nap_schedule is NaP's learning-rate protocol"):
        cav.InterventionPlugin("redo", nap_schedule=False)  # would do nothing: no NaP to schedule
