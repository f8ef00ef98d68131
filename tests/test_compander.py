"""Weight reparameterization ``--reparam compander`` (issue 15): the compander's equation on
hand-computed values, the network at initialisation unchanged, its learnable variant, what NaP
projects, the re-initialising interventions, and checkpoints through a real run and resume.

The function is crl's ``W = s tanh(k V / s)`` (crl/nn/reparam/compander.py says why: the
paper's own equation was not in crl's references), so there are no official numbers to test
against; every expected value below is computed by hand from that equation."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import gym_args
from crl.checkpoint import load_latest_checkpoint
from crl.cli import main
from crl.config import make_config
from crl.interventions.nap import NaPProjection
from crl.interventions.redo import ReDo
from crl.interventions.reset import reinitialize_, snapshot
from crl.nn.network import QNetwork, build_torso
from crl.nn.reparam import stored_weight, to_stored
from crl.nn.reparam.compander import Compander
from crl.registry import REPARAMS, load_builtins

load_builtins()


def test_compander_equation_bound_slope_and_inverse():
    f = Compander(scale=2.0, slope=3.0)
    v = torch.tensor([0.5, -0.5, 0.0, 100.0])
    # 2 tanh(3 * 0.5 / 2) = 2 tanh(0.75) = 2 * 0.6351489524 = 1.2702979048
    assert torch.allclose(f(v), torch.tensor([1.2702979048, -1.2702979048, 0.0, 2.0]), atol=1e-7)
    assert f(torch.tensor([1e6])).item() <= 2.0  # bounded by s: large weights are compressed
    x = torch.zeros(1, requires_grad=True)
    f(x).sum().backward()
    assert x.grad.item() == pytest.approx(3.0)  # f'(0) = k: small weights expanded
    w = torch.tensor([1.2702979048, -0.3, 0.0])
    assert torch.allclose(f.right_inverse(w), torch.tensor([0.5, 2 / 3 * math.atanh(-0.15), 0.0]), atol=1e-6)
    assert torch.allclose(f(f.right_inverse(w)), w, atol=1e-6)


def _mlp(**cfg) -> nn.Module:
    torch.manual_seed(7)
    return build_torso(make_config("gym", **{"torso": "mlp", "mlp_hidden": "8,8", "norm": "layernorm", **cfg}), (6,))


def test_every_torso_weight_is_reparameterized_and_the_network_at_init_is_the_plain_one():
    plain, comp = _mlp(), _mlp(reparam="compander")
    x = torch.randn(5, 6)
    assert torch.allclose(plain(x), comp(x), atol=1e-6)  # V_0 = right_inverse(W_0)
    for block in comp.blocks:
        f = block.layer.parametrizations.weight[0]
        w0 = block.layer.weight.detach()
        assert f.scale0 == pytest.approx(2.0 * w0.abs().max().item(), rel=1e-5)  # s = bound x max|W_0|
        assert f.slope0 == 2.0
    assert [n for n, _ in comp.named_parameters()] == [
        "blocks.0.layer.parametrizations.weight.original", "blocks.0.norm.weight", "blocks.0.norm.bias",
        "blocks.1.layer.parametrizations.weight.original", "blocks.1.norm.weight", "blocks.1.norm.bias"]


def test_learnable_scale_and_slope_are_parameters_that_get_gradients():
    comp = _mlp(reparam="compander", compander_learn=True)
    names = [n for n, _ in comp.named_parameters()]
    assert "blocks.0.layer.parametrizations.weight.0.log_scale" in names
    assert "blocks.1.layer.parametrizations.weight.0.log_slope" in names
    comp(torch.randn(5, 6)).square().sum().backward()
    f = comp.blocks[0].layer.parametrizations.weight[0]
    assert f.log_scale.grad is not None and f.log_slope.grad is not None and f.log_slope.grad.abs() > 0


def test_nap_projects_the_stored_tensor_the_optimizer_updates():
    torso = _mlp(reparam="compander")
    net = QNetwork(torso, 2, type("H", (), {"num_outputs": 1})())
    named = net.projectable_weights()
    assert [n for n, _ in named] == ["torso.blocks.0.layer.parametrizations.weight.original",
                                     "torso.blocks.1.layer.parametrizations.weight.original"]
    assert all(p is stored_weight(net.get_submodule(n.rsplit(".parametrizations", 1)[0])) for n, p in named)
    nap = NaPProjection()
    nap.attach(net)
    rho = [p.norm().item() for _, p in named]
    with torch.no_grad():
        for _, p in named:
            p.mul_(3.0)
    nap.project()
    assert [p.norm().item() for _, p in named] == pytest.approx(rho, rel=1e-6)


def test_reset_draws_a_fresh_weight_through_the_inverse_and_resets_the_compander():
    torso = _mlp(reparam="compander", compander_learn=True)
    layer = torso.blocks[0].layer
    f = layer.parametrizations.weight[0]
    v = stored_weight(layer)
    init = snapshot(torso)
    with torch.no_grad():
        f.log_scale.add_(1.0)
        v.mul_(5.0)
    before = layer.weight.detach().clone()
    reinitialize_(torso, init)
    assert stored_weight(layer) is v  # the same Parameter: it stays in the optimizer
    assert f.log_scale.item() == pytest.approx(math.log(f.scale0))
    w = layer.weight.detach()
    assert not torch.allclose(w, before) and w.abs().max() <= 1 / math.sqrt(6) + 1e-6  # PyTorch's Linear init bound
    assert torch.allclose(v, to_stored(layer, w), atol=1e-6)


def test_redo_recycles_through_the_inverse_and_zeroes_outgoing_stored_weights():
    torso = _mlp(reparam="compander", activation="crelu", mlp_hidden="4", norm="none")
    net = QNetwork(torso, 2, type("H", (), {"num_outputs": 1})())
    layer = torso.blocks[0].layer
    with torch.no_grad():
        stored_weight(layer)[0].zero_()  # unit 0: x = 0 on every input -> both halves 0 -> dormant
        layer.bias[0] = 0.0
    redo = ReDo(tau=0.0)
    redo.attach(net)
    counts = redo.recycle(net, None, torch.randn(32, 6))
    assert counts == {"torso.blocks.0": 1}
    assert stored_weight(layer)[0].abs().sum() > 0
    assert torch.allclose(layer.weight, layer.parametrizations.weight[0](stored_weight(layer)))
    assert net.output.weight[:, [0, 4]].abs().sum() == 0


@pytest.mark.parametrize("extra", [["--norm", "nap"], ["--intervention", "redo", "--redo-every", "50"],
                                   ["--intervention", "reset", "--reset-every", "60", "--reset-layers", "last2"],
                                   ["--intervention", "shrink-perturb", "--sp-every", "60"],
                                   ["--intervention", "l2-init"]])
def test_compander_runs_with_nap_and_every_reinitialising_intervention(tmp_path, extra):
    assert main(gym_args(tmp_path, "--steps", "200", "--learning-starts", "50", "--reparam", "compander",
                         "--compander-learn", "--eval-every", "200", "--eval-episodes", "1", "--eval-max-steps", "50",
                         "--mlp-hidden", "32,32", *extra)) == 0


def _weights(root: Path, name: str) -> dict:
    return load_latest_checkpoint(next(root.glob(f"*/*/{name}")))["learner"]["network"]


def test_checkpoint_resume_with_reparam_and_learnable_activation_equals_an_uninterrupted_run(tmp_path, capsys):
    args = ("--learning-starts", "40", "--eval-every", "120", "--checkpoint-every", "120", "--eval-episodes", "1",
            "--eval-max-steps", "50", "--eps-decay-steps", "120", "--target-update", "40", "--seed", "2",
            "--mlp-hidden", "32,32", "--reparam", "compander", "--compander-learn", "--activation", "crrelu",
            "--norm", "layernorm")
    assert main(gym_args(tmp_path, *args, "--steps", "120", "--name", "short")) == 0
    assert main(gym_args(tmp_path, *args, "--steps", "240", "--name", "long")) == 0
    short = next(tmp_path.glob("*/*/short"))
    assert main(["gym", "--resume", str(short), "--steps", "240"]) == 0
    a, b = _weights(tmp_path, "short"), _weights(tmp_path, "long")
    assert "torso.blocks.0.layer.parametrizations.weight.original" in a
    assert "torso.blocks.0.layer.parametrizations.weight.0.log_slope" in a and "torso.blocks.0.act.eps" in a
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_catalogue_and_bad_input(tmp_path, capsys):
    assert main(["help"]) == 0
    out = capsys.readouterr().out
    assert "weight reparameterizations (--reparam):" in out and "compander" in REPARAMS
    for extra, starts in ((["--reparam", "weightnorm"], "error: --reparam: unknown reparam 'weightnorm'"),
                          (["--reparam", "compander", "--compander-bound", "0.5"],
                           "error: --compander-bound: must be > 1"),
                          (["--compander-slope", "3"], "error: --compander-slope: an option of reparam compander")):
        assert main(gym_args(tmp_path, "--steps", "50", *extra)) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(starts), lines
