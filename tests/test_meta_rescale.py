"""Meta loss-rescaling (crl's STORM-like design): weights, the meta step, the learner contract.

The noisy-label tests are a small version of ``scripts/bench_meta_rescale.py``: Gaussian
blobs with 40% of the training labels flipped to another class.

* With *clean-label* meta batches (Meta-Weight-Net's setting, an oracle) the look-ahead
  meta-gradient must push the weights of flipped samples below those of clean ones: this
  checks the sign and the plumbing of the meta step.
* In the self-taught setting (meta batches drawn from the noisy training data, no clean
  data) the same direction is what STORM reports. With the defaults ``--meta-val
  small-loss`` (the small-loss half of uniform candidates, Co-teaching's criterion) and
  ``--meta-loss mae`` (1 - p(y|x) on the meta batch) it comes out on every seed of the
  test: flipped samples get well under half the weight of clean ones and the clean-label
  test accuracy beats the same run without rescaling (150 updates). On sklearn digits
  (1,000 updates, the benchmark's seed 0) the separation must also hold at the end of
  training and at every 10% of it: it did not with the old rescaler settings (virtual step =
  the learner's lr, no weight decay), it does with Meta-Weight-Net's (the defaults).
  With uniform noisy meta batches and the CE meta loss it does not come out at all (kept as
  a check of that finding).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import load_script
from crl.config import make_config
from crl.errors import UserError
from crl.interventions.meta_rescale import MetaRescale, index_batch
from crl.registry import INTERVENTIONS, load_builtins

load_builtins()


def blobs(seed=0, n=600, d=10, k=5, noise=0.4, spread=1.5):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * spread
    y = torch.randint(k, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g)
    flipped = torch.rand(n, generator=g) < noise
    noisy = torch.where(flipped, (y + torch.randint(1, k, (n,), generator=g)) % k, y)
    return x, noisy, y, flipped


def clean_test_set(seed=0, n=1000, d=10, k=5, spread=1.5):
    """Fresh points of the same blobs as ``blobs(seed)`` (same centers), with their true labels."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * spread
    g = torch.Generator().manual_seed(10_000 + seed)
    y = torch.randint(k, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g), y


class Learner:
    """The learner contract on an in-memory classification set; ``meta_y``: labels of sample_batch."""

    def __init__(self, x, y, meta_y, seed=0, hidden=64, k=5):
        torch.manual_seed(seed)
        self.x, self.y, self.meta_y = x, y, meta_y
        self.network = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, k))
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=3e-3)
        self.gen = torch.Generator().manual_seed(seed + 1)

    def train_batch(self, size):
        idx = torch.randint(len(self.x), (size,), generator=self.gen)
        return self.x[idx], self.y[idx]

    def sample_batch(self, size):
        idx = torch.randint(len(self.x), (size,), generator=self.gen)
        return self.x[idx], self.meta_y[idx]

    def per_sample_loss(self, batch, params=None):
        x, y = batch
        net = self.network
        logits = net(x) if params is None else torch.func.functional_call(net, params, (x,))
        return F.cross_entropy(logits, y, reduction="none"), logits


def train(learner, hook, steps, batch_size=32):
    run = SimpleNamespace(learner=learner, logger=None, global_step=0)
    if hook is not None:
        hook.on_run_start(run)
    for _ in range(steps):
        batch = learner.train_batch(batch_size)
        losses, _ = learner.per_sample_loss(batch)
        if hook is not None:
            losses = hook.transform_loss(run, losses, batch)
        learner.optimizer.zero_grad(set_to_none=True)
        losses.mean().backward()
        learner.optimizer.step()
    return run


def flipped_vs_clean(hook, learner, x, y, flipped):
    w = hook.sample_weights(learner, (x, y))
    return float(w[flipped].mean()), float(w[~flipped].mean())


def test_weights_start_at_one_and_keep_mean_one():
    hook = MetaRescale()
    feats = torch.randn(16, len(hook.features))
    assert torch.equal(hook.weights(feats), torch.ones(16))
    with torch.no_grad():
        for p in hook.rescaler.parameters():
            p.normal_()
    w = hook.weights(feats)
    assert (w > 0).all() and not torch.allclose(w, torch.ones(16))
    torch.testing.assert_close(w.mean(), torch.tensor(1.0))


def test_meta_step_updates_only_the_rescaler():
    x, y, _, _ = blobs(n=128)
    learner = Learner(x, y, y)
    hook = MetaRescale(val="sampled")
    run = SimpleNamespace(learner=learner, logger=None, global_step=0)
    hook.on_run_start(run)
    net_before = [p.detach().clone() for p in learner.network.parameters()]
    omega_before = [p.detach().clone() for p in hook.rescaler.parameters()]
    batch = learner.train_batch(32)
    losses, _ = learner.per_sample_loss(batch)
    out = hook.transform_loss(run, losses, batch)
    assert all(p.grad is None for p in learner.network.parameters())
    assert all(torch.equal(a, b) for a, b in zip(net_before, learner.network.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(omega_before, hook.rescaler.parameters()))
    # the learner's loss is w' * l with detached weights of mean 1, from the updated rescaler
    torch.testing.assert_close(out.detach(), losses.detach() * hook.last_weights)
    torch.testing.assert_close(hook.last_weights.mean(), torch.tensor(1.0))
    assert not hook.last_weights.requires_grad
    out.mean().backward()
    assert all(p.grad is not None for p in learner.network.parameters())


def test_clean_meta_batches_downweight_flipped_labels():
    """Oracle check of the look-ahead meta-gradient (Meta-Weight-Net with a clean meta set)."""
    x, noisy, clean, flipped = blobs(seed=0)
    learner = Learner(x, noisy, meta_y=clean)
    hook = MetaRescale(val="uniform")
    train(learner, hook, steps=150)
    w_flipped, w_clean = flipped_vs_clean(hook, learner, x, noisy, flipped)
    assert w_flipped < 0.7 * w_clean, (w_flipped, w_clean)


def accuracy(learner, x, y):
    with torch.no_grad():
        return float((learner.network(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_self_taught_rescaling_downweights_flipped_labels(seed):
    """The issue's check, short: 40% flipped labels, no clean data anywhere in training."""
    x, noisy, _, flipped = blobs(seed=seed)
    xt, yt = clean_test_set(seed=seed)
    plain = Learner(x, noisy, meta_y=noisy, seed=seed)
    train(plain, None, steps=150)
    learner = Learner(x, noisy, meta_y=noisy, seed=seed)  # same init (the meta step draws from the same stream)
    hook = MetaRescale()  # defaults: meta batches from the noisy training data (small-loss), MAE meta loss
    assert (hook.val, hook.meta_loss) == ("small-loss", "mae")
    train(learner, hook, steps=150)
    w_flipped, w_clean = flipped_vs_clean(hook, learner, x, noisy, flipped)
    assert w_flipped < 0.5 * w_clean, (w_flipped, w_clean)
    assert accuracy(learner, xt, yt) > accuracy(plain, xt, yt) + 0.005, (accuracy(learner, xt, yt),
                                                                          accuracy(plain, xt, yt))


def test_uniform_noisy_meta_batches_with_ce_do_not_downweight_flipped_labels():
    """The finding that motivated ``small-loss``: noisy uniform V with a CE meta loss rewards lower confidence."""
    x, noisy, _, flipped = blobs(seed=0)
    learner = Learner(x, noisy, meta_y=noisy)
    hook = MetaRescale(val="uniform", meta_loss="ce")
    train(learner, hook, steps=150)
    w_flipped, w_clean = flipped_vs_clean(hook, learner, x, noisy, flipped)
    assert w_flipped > 0.9 * w_clean, (w_flipped, w_clean)


def test_small_loss_meta_batch_is_the_smallest_loss_part_of_its_candidates():
    x, noisy, _, _ = blobs(n=200)
    learner = Learner(x, noisy, noisy)
    hook = MetaRescale(val="small-loss", keep=0.25)
    drawn = []
    sample = learner.sample_batch
    learner.sample_batch = lambda size: drawn.append(size) or sample(size)
    xv, yv = hook.validation_batch(learner, 10)
    assert drawn == [40] and len(xv) == 10  # ceil(10 / 0.25) candidates, 10 kept
    learner.sample_batch = sample
    learner.gen.manual_seed(123)  # the same candidates again: V must be their 10 smallest-loss samples
    cx, cy = learner.sample_batch(40)
    learner.gen.manual_seed(123)
    xv, yv = hook.validation_batch(learner, 10)
    with torch.no_grad():
        lc = torch.nn.functional.cross_entropy(learner.network(cx), cy, reduction="none")
        lv = torch.nn.functional.cross_entropy(learner.network(xv), yv, reduction="none")
    torch.testing.assert_close(lv.sort().values, lc.sort().values[:10])


def test_mae_meta_loss_is_one_minus_p_of_the_label():
    x, noisy, _, _ = blobs(n=64)
    learner = Learner(x, noisy, noisy)
    hook = MetaRescale(val="uniform", meta_loss="mae", inner_lr=1e-4)  # a small virtual step: theta' ~ theta
    run = SimpleNamespace(learner=learner, logger=None, global_step=0)
    hook.on_run_start(run)
    learner.gen.manual_seed(7)
    batch = learner.train_batch(16)
    val = learner.sample_batch(16)  # what the meta step draws after re-seeding
    learner.gen.manual_seed(7)
    learner.train_batch(16)
    hook.meta_step(learner, batch)
    # the meta loss is evaluated at theta' (one virtual step); at alpha -> 0 it is 1 - p at theta
    with torch.no_grad():
        p = torch.softmax(learner.network(val[0]), 1).gather(1, val[1][:, None]).squeeze(1)
    assert hook.last_meta_loss == pytest.approx(float((1 - p).mean()), abs=1e-3)


def test_state_dict_round_trip_gives_the_same_weights():
    x, y, _, _ = blobs(n=128)
    learner = Learner(x, y, y)
    hook = MetaRescale(output="softplus")
    train(learner, hook, steps=5)
    other = MetaRescale(output="softplus")
    other.load_state_dict(hook.state_dict())
    other.on_run_start(SimpleNamespace(learner=learner))
    batch = (x[:20], y[:20])
    torch.testing.assert_close(other.sample_weights(learner, batch), hook.sample_weights(learner, batch))
    assert other.meta_opt.state_dict()["state"].keys() == hook.meta_opt.state_dict()["state"].keys()


def test_contract_and_option_errors():
    with pytest.raises(UserError, match="--intervention meta-rescale: learner .* lacks per_sample_loss, sample_batch"):
        MetaRescale().on_run_start(SimpleNamespace(learner=SimpleNamespace(network=nn.Linear(2, 2))))
    with pytest.raises(UserError, match="--meta-features: unknown feature 'confidence'; accepted: loss, loss_z"):
        INTERVENTIONS.get("meta-rescale")(make_config("gym", meta_features="loss,confidence"))
    with pytest.raises(UserError, match="--meta-every: must be > 0"):
        INTERVENTIONS.get("meta-rescale")(make_config("gym", meta_every=0))
    with pytest.raises(UserError, match=r"--meta-keep: must be in \(0, 1\]"):
        INTERVENTIONS.get("meta-rescale")(make_config("gym", meta_keep=0.0))
    with pytest.raises(UserError, match="--meta-loss: unknown loss 'mse'"):
        MetaRescale(meta_loss="mse")


def test_index_batch_handles_learner_formats():
    idx = torch.tensor([2, 0])
    b = {"obs": torch.arange(8).view(4, 2), "actions": torch.arange(4), "gamma": torch.tensor(0.9)}
    out = index_batch(b, idx, 4)
    assert out["obs"].tolist() == [[4, 5], [0, 1]] and out["actions"].tolist() == [2, 0]
    assert out["gamma"].item() == pytest.approx(0.9)
    assert index_batch((torch.arange(4), torch.arange(4) * 2), idx, 4)[1].tolist() == [4, 0]


def test_dqn_per_sample_loss_functional_params_match():
    """The DQN side of the contract: ``per_sample_loss(b, params)`` evaluates the online net with ``params``."""
    import numpy as np

    from crl.api import prepare

    cfg = make_config("gym", scenario="gym", agent="dqn-hlgauss", mlp_hidden="16", num_envs=1, device="cpu", progress=False)
    _, learner, _ = prepare(cfg)
    rng = np.random.default_rng(0)
    for t in range(12):
        o = rng.normal(size=(1, 4)).astype(np.float32)
        learner.replay.add(o, np.array([t % 2]), np.array([1.0]), o, np.array([False]), np.array([False]),
                           np.array([True]))
    b = learner.sample_batch(8)
    losses, outputs = learner.per_sample_loss(b)
    assert losses.shape == (8,) and outputs.shape == (8, cfg.num_bins)
    params = {n: p.detach() + 0.0 for n, p in learner.network.named_parameters()}
    same, _ = learner.per_sample_loss(b, params=params)
    torch.testing.assert_close(same, losses.detach())
    params["output.weight"] = 2.0 * params["output.weight"]  # (a constant bias shift would not change the CE)
    moved, _ = learner.per_sample_loss(b, params=params)
    assert not torch.allclose(moved, losses.detach())


def test_default_weights_stay_separated_after_training_on_noisy_digits():
    """End-of-training weights (the issue's criterion), the benchmark's setting shortened to 1,000 updates.

    sklearn digits, 40% flipped labels, seed 0 of ``scripts/bench_meta_rescale.py``. With the
    old rescaler settings (virtual step = the learner's lr 1e-3, no weight decay on the
    rescaler) flipped samples weighed 1.36x the clean ones at this point; with the defaults
    (Meta-Weight-Net's: virtual step 0.1, Adam 1e-3 with weight decay 1e-4) 0.09 vs 1.58.
    """
    pytest.importorskip("sklearn")
    bench = load_script("bench_meta_rescale")
    hook = MetaRescale()
    args = SimpleNamespace(steps=1000, batch_size=64, lr=1e-3, noise=0.4, hidden=[256, 256], keep=hook.keep,
                           meta_lr=hook.lr, meta_inner_lr=hook.inner_lr, meta_weight_decay=hook.weight_decay,
                           meta_optimizer=hook.optimizer)
    r = bench.run_one(0, "small-loss+mae", args)
    assert r["w_final_flipped"] < 0.3 * r["w_final_clean"], r
    assert r["w_train_flipped"] < 0.3 * r["w_train_clean"], r
    assert r["below"] == 10, r  # flipped below clean at every 10% of training
    plain = bench.run_one(0, "none", args)
    assert r["acc"] > plain["acc"] + 0.05, (r["acc"], plain["acc"])
