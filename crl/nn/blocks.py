"""The unit the network builder repeats: ``affine map -> norm -> nonlinearity``.

Putting the norm before each nonlinearity is what NaP (Lyle et al. 2024, arXiv 2407.01800)
and PQN (Gallici et al. 2025) require; the affine map drops its bias when the norm removes
the mean (the norm's offset does the shifting). A block whose layer feeds *only* a norm is
scale-invariant in that layer's weight, so it is marked ``projectable`` for NaP.

The nonlinearity is ``--activation`` (:mod:`crl.nn.activations`, ReLU by default); a block's
``out_width`` is what its activation returns (twice its units for CReLU).
"""
from __future__ import annotations

from torch import nn

from crl.nn.activations import make_activation, width_factor
from crl.nn.norms import drops_bias, includes_activation, make_norm, scale_invariant


class Block(nn.Module):
    """``layer -> norm -> act`` where ``layer`` is built with the right ``bias`` flag."""

    def __init__(self, make_layer, out_features: int, norm: str, dims: int, act: bool = True,
                 activation: str = "relu"):
        super().__init__()
        self.layer = make_layer(not drops_bias(norm))
        self.norm = make_norm(norm, out_features, dims)
        fused = includes_activation(norm)
        self.act = nn.Identity() if fused or not act else make_activation(activation, out_features, dims)
        self.out_width = out_features * (width_factor(activation) if act and not fused else 1)
        self.projectable = scale_invariant(norm)
        self.fused_activation = fused

    def forward(self, x):
        return self.act(self.norm(self.layer(x)))

    def activation_module(self) -> nn.Module:
        """The module whose output is this block's post-activation feature (for metrics)."""
        return self.norm if self.fused_activation else self.act


def dense_block(in_features: int, out_features: int, norm: str, activation: str = "relu") -> Block:
    return Block(lambda bias: nn.Linear(in_features, out_features, bias=bias), out_features, norm, dims=1,
                 activation=activation)


def conv_block(in_ch: int, out_ch: int, kernel: int, stride: int, norm: str, padding: int = 0,
               act: bool = True, activation: str = "relu") -> Block:
    return Block(lambda bias: nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=bias), out_ch, norm, dims=2,
                 act=act, activation=activation)


class PreNormAct(nn.Module):
    """``norm -> act`` on a residual stream (no affine map of its own, so nothing to project)."""

    def __init__(self, channels: int, norm: str, activation: str = "relu"):
        super().__init__()
        self.norm = make_norm(norm, channels, 2)
        self.fused_activation = includes_activation(norm)
        self.act = nn.Identity() if self.fused_activation else make_activation(activation, channels, 2)
        self.out_width = channels * (1 if self.fused_activation else width_factor(activation))

    def forward(self, x):
        return self.act(self.norm(x))

    def activation_module(self) -> nn.Module:
        return self.norm if self.fused_activation else self.act
