"""crl.nn.module_walk: cached module/parameter/buffer lists that follow every registration."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from crl.nn import module_walk
from crl.reliability import NumericalError, check_finite, grad_norms


def _ids(*lists):
    return tuple(tuple(map(id, x)) for x in lists)  # tensors compare by identity here, not by value


def _net():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_lists_equal_the_module_walks():
    net = _net()
    assert module_walk.modules(net) == tuple(net.modules())
    assert _ids(module_walk.parameters(net)) == _ids(net.parameters())
    assert _ids(module_walk.float_buffers(net)) == _ids([net[1].running_mean, net[1].running_var])  # no counter
    assert module_walk.parameters(net) is module_walk.parameters(net)  # cached: no new walk


def test_shared_parameters_are_listed_once():
    tied = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    tied[1].weight = tied[0].weight
    assert sum(p is tied[0].weight for p in module_walk.parameters(tied)) == 1
    assert _ids(module_walk.parameters(tied)) == _ids(tied.parameters())


@pytest.mark.parametrize("change", ["module", "parameter", "buffer", "append"])
def test_a_registration_after_the_first_walk_is_seen(change):
    net = _net()
    before = _ids(module_walk.parameters(net), module_walk.float_buffers(net), module_walk.modules(net))
    if change == "module":
        net[3] = nn.Linear(4, 2)  # a new layer (e.g. a user's reset that builds one)
    elif change == "parameter":
        net[0].weight = nn.Parameter(torch.zeros(4, 3))
    elif change == "buffer":
        net[3].register_buffer("scale", torch.ones(2))
    else:
        net.append(nn.Linear(2, 2))
    after = _ids(module_walk.parameters(net), module_walk.float_buffers(net), module_walk.modules(net))
    assert after == _ids(net.parameters(), [b for b in net.buffers() if b.is_floating_point()], net.modules())
    assert after != before


def test_the_guard_sees_a_layer_swapped_in_after_training_started():
    net = _net()
    net(torch.randn(8, 3)).sum().backward()
    check_finite(None, torch.tensor(1.0), net, step=1)  # the first walk
    net[3] = nn.Linear(4, 2)
    net.zero_grad()
    net(torch.randn(8, 3)).sum().backward()
    net[3].bias.grad[0] = float("nan")
    grads, total = grad_norms(net)
    assert any(g is net[3].bias.grad for g in grads) and not torch.isfinite(total)
    with pytest.raises(NumericalError, match="non-finite gradient .* in layer '3.bias'"):
        check_finite(None, torch.tensor(1.0), net, step=2, total_grad_norm=total)
