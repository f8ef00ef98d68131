"""Activations (``--activation``, issue 15): each forward against its equation on hand-computed
values, CReLU's widths in every torso, dormant units for a widening activation (metrics and
ReDo), and one-line errors for bad combinations."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import gym_args
from crl.cli import main
from crl.config import make_config
from crl.interventions.redo import ReDo
from crl.nn.activations import make_activation
from crl.nn.network import QNetwork, build_torso
from crl.registry import ACTIVATIONS, load_builtins

load_builtins()


def _act(name: str, **cfg):
    from crl.options import building

    with building(make_config("gym", activation=name, **cfg)):
        return make_activation(name, 4, 1)


def test_relu_is_torch_relu_and_gelu_is_the_exact_erf_form():
    assert type(_act("relu")) is nn.ReLU  # default networks are unchanged (same modules, same state_dict)
    x = torch.tensor([[-2.0, -0.5, 0.0, 1.0]])
    assert torch.equal(_act("relu")(x), torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
    # GELU(x) = x * Phi(x): Phi(1) = 0.841344746..., Phi(-0.5) = 0.308537538...
    got = _act("gelu")(x)
    want = torch.tensor([[-2 * 0.0227501319, -0.5 * 0.3085375387, 0.0, 0.8413447461]])
    assert torch.allclose(got, want, atol=1e-7)


def test_leaky_relu_uses_its_slope_option():
    x = torch.tensor([[-2.0, 3.0]])
    assert torch.allclose(_act("leaky-relu")(x), torch.tensor([[-0.02, 3.0]]))
    assert torch.allclose(_act("leaky-relu", leaky_slope=0.25)(x), torch.tensor([[-0.5, 3.0]]))


def test_crelu_concatenates_relu_of_x_and_of_minus_x_along_axis_1():
    x = torch.tensor([[-2.0, 0.5, 0.0], [1.0, -1.0, 3.0]])
    assert torch.equal(_act("crelu")(x), torch.tensor([[0.0, 0.5, 0.0, 2.0, 0.0, 0.0],
                                                        [1.0, 0.0, 3.0, 0.0, 1.0, 0.0]]))
    conv = torch.randn(2, 3, 4, 4)
    out = _act("crelu")(conv)
    assert out.shape == (2, 6, 4, 4)
    assert torch.equal(out[:, :3], conv.clamp_min(0)) and torch.equal(out[:, 3:], (-conv).clamp_min(0))


def test_crrelu_equation_initial_eps_and_its_gradient():
    """relu(x) + eps * x * exp(-x^2/2), eps learnable, init 0.01 (the paper's value)."""
    act = _act("crrelu")
    assert [n for n, _ in act.named_parameters()] == ["eps"] and act.eps.item() == pytest.approx(0.01)
    x = torch.tensor([[-1.0, 0.0, 1.0, 2.0]])
    y = act(x)
    e = math.exp(-0.5)  # x = +-1: 0.01 * exp(-1/2) = 0.0060653066
    want = torch.tensor([[-0.01 * e, 0.0, 1.0 + 0.01 * e, 2.0 + 0.02 * math.exp(-2.0)]])
    assert torch.allclose(y, want, atol=1e-7)
    y.sum().backward()  # d/d eps = sum x exp(-x^2/2) = -e + 0 + e + 2 exp(-2)
    assert act.eps.grad.item() == pytest.approx(2 * math.exp(-2.0), rel=1e-6)
    assert _act("crrelu", crrelu_init=0.5).eps.item() == pytest.approx(0.5)


def _mlp(activation: str, **cfg) -> nn.Module:
    return build_torso(make_config("gym", **{"torso": "mlp", "mlp_hidden": "8,8", "activation": activation, **cfg}),
                       (6,))


@pytest.mark.parametrize("width, params, out", [
    ("keep", (6 * 8 + 8) + (16 * 8 + 8), 16),    # units as configured; the next layer reads 2 x 8
    ("halve", (6 * 4 + 4) + (8 * 4 + 4), 8),     # output widths as configured: 4 units per layer
    ("params", (6 * 6 + 6) + (12 * 6 + 6), 12),  # round(8 / sqrt 2) = 6 units: about ReLU's 6*8+8 + 8*8+8
])
def test_crelu_width_modes_size_the_mlp_as_documented(width, params, out):
    relu = _mlp("relu")
    assert sum(p.numel() for p in relu.parameters()) == (6 * 8 + 8) + (8 * 8 + 8) and relu.out_features == 8
    torso = _mlp("crelu", crelu_width=width)
    assert sum(p.numel() for p in torso.parameters()) == params
    assert torso.out_features == out and torso(torch.randn(3, 6)).shape == (3, out)


@pytest.mark.parametrize("torso, shape", [("mlp", (6,)), ("nature", (4, 44, 44)), ("impala", (3, 16, 16)),
                                          ("resnet18", (3, 8, 8)), ("small_cnn", (1, 8, 8)),
                                          ("minatar", (4, 10, 10))])
@pytest.mark.parametrize("activation", ["crelu", "crrelu", "gelu", "leaky-relu"])
def test_every_torso_builds_and_runs_with_every_activation(torso, shape, activation):
    cfg = make_config("gym", torso=torso, activation=activation, norm="layernorm", resnet_width=4, impala_dense=16,
                      mlp_hidden="8,8")
    net = build_torso(cfg, shape)
    acts = [m for m in net.modules() if type(m).__name__ in ("CReLU", "CRReLU", "GELU", "LeakyReLU")]
    assert acts and not any(isinstance(m, nn.ReLU) for m in net.modules())  # every ReLU replaced
    assert net(torch.randn(2, *shape)).shape == (2, net.out_features)


def test_crelu_resnet18_stream_doubles_and_shortcuts_project():
    cfg = make_config("supervised", torso="resnet18", activation="crelu", resnet_width=4)
    net = build_torso(cfg, (3, 8, 8))
    assert net.out_features == 2 * 8 * 4
    assert all(not isinstance(b.shortcut, nn.Identity) for b in net.stages)  # 2C stream + C conv: projected


def test_dormant_units_of_crelu_metrics_halves_and_redo_pre_split_units():
    """Metrics: each half of a CReLU output is a unit. ReDo: the pre-activation unit, scored by E|x|, is
    dormant only when both halves are; its outgoing columns are those of both halves."""
    from crl.metrics import plasticity as P

    torch.manual_seed(0)
    torso = _mlp("crelu", mlp_hidden="4")
    net = QNetwork(torso, 2, type("H", (), {"num_outputs": 1})())
    layer = torso.blocks[0].layer
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor([0.0, -1.0, 2.0, 3.0]))  # unit 0 outputs 0 on both halves; unit 1: relu(-x)=1
        net.output.weight.fill_(1.0)
    x = torch.randn(16, 6)
    acts = torso.blocks[0].act(layer(x))  # (16, 8): [relu(b), relu(-b)]
    # halves as units: scores |h| / mean|h| = [0, 0, 2, 3, 0, 1, 0, 0] / 0.75 -> tau 0.1 flags 5 of 8
    assert P.dormant_fraction(acts, 0.1) == pytest.approx(5 / 8)
    redo = ReDo(tau=0.1)
    redo.attach(net)
    (mask,) = redo.dormant_masks(net, x)
    assert mask.tolist() == [True, False, False, False]  # E|x| = [0, 1, 2, 3]: only unit 0 (0 / 1.5 <= 0.1)
    redo.recycle(net, None, x)
    assert net.output.weight[:, [0, 4]].abs().sum() == 0  # both halves of unit 0 feed nothing now
    assert (net.output.weight[:, [1, 2, 3, 5, 6, 7]] == 1.0).all()
    assert layer.weight[0].abs().sum() > 0 and layer.bias[0] == 0  # incoming: fresh row, bias 0


def test_crelu_metric_hook_logs_fau_for_crelu_layers():
    from crl.metrics.hooks import _fau_kind

    assert _fau_kind(_act("crelu")) == "relu" and _fau_kind(nn.ReLU()) == "relu"
    assert _fau_kind(_act("gelu")) is None and _fau_kind(_act("crrelu")) is None


def test_catalogue_lists_every_activation_with_one_line(capsys):
    assert main(["help"]) == 0
    out = capsys.readouterr().out
    assert "activations (--activation):" in out
    for name in ("relu", "crelu", "crrelu", "gelu", "leaky-relu"):
        assert name in ACTIVATIONS and any(line.strip().startswith(name + " ") for line in out.splitlines())


@pytest.mark.parametrize("extra, starts", [
    (["--activation", "swish"], "error: --activation: unknown activation 'swish'"),
    (["--activation", "gelu", "--norm", "evonorm-s0"], "error: --activation: 'gelu' cannot be used with --norm"),
    (["--activation", "crelu", "--crelu-width", "halve", "--mlp-hidden", "7"], "error: --crelu-width halve:"),
    (["--activation", "crelu", "--crelu-width", "wide"],
     "error: --crelu-width: 'wide' is not one of keep, halve, params"),
    (["--leaky-slope", "0.2"], "error: --leaky-slope: an option of activation leaky-relu"),
])
def test_bad_activation_input_is_one_error_line_exit_2(tmp_path, capsys, extra, starts):
    assert main(gym_args(tmp_path, "--steps", "50", *extra)) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(starts), lines
    assert not any(tmp_path.iterdir())


def test_sweep_grids_accept_activation_and_reparam_names_and_refuse_unknown_ones(tmp_path):
    from crl.errors import UserError
    from crl.sweep import parse_grid, plan

    base = ["gym", "--steps", "50", "--run-dir", str(tmp_path)]
    trials = plan(base, parse_grid(["activation=relu,crelu,crrelu,gelu,leaky-relu", "reparam=none,compander"], None))
    assert len(trials) == 10
    assert {t.config.activation for t in trials} == {"relu", "crelu", "crrelu", "gelu", "leaky-relu"}
    with pytest.raises(UserError, match="--activation: unknown activation 'swish'"):
        plan(base, parse_grid(["activation=relu,swish"], None))
