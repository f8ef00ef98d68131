"""CLI smoke run of every registered ``--norm`` x ``--torso`` in {nature, impala, mlp}.

A combination the norm defines (``make_norm``'s ``dims``: the MLP torso needs dense
features, the conv torsos conv feature maps; their penultimate dense layer keeps plain
``Linear -> ReLU`` for a conv-only norm, see ``crl/nn/torsos/nature.py``) must run
``crl.cli.main`` to exit 0 with at least one optimizer update (``train/updates`` in the
TensorBoard events) that changed the network's weights. A combination it does not define
must be refused: exit code 2 and one stderr line naming ``--norm``.

Budget: tiny (CartPole for ``mlp``, Pong with one env for the conv torsos, ``--impala-width
1``), one torch thread; most of a conv run's time is building and resetting the ALE envs.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.dqn import DQNAgent
from crl.cli import main
from crl.registry import NORMS, load_builtins

load_builtins()

TORSOS = ("nature", "impala", "mlp")
GYM = ["gym", "--env-id", "CartPole-v1", "--steps", "200", "--learning-starts", "50", "--eval-every", "200",
       "--eval-episodes", "1", "--batch-size", "8", "--log-every", "25"]
# one env (an ALE env costs ~0.5 s to build and ~0.5 s to reset, three builds per run); 40 steps
# with --learning-starts 20 and the Atari preset's --train-freq 4: 5 updates
ATARI = ["atari", "--game", "pong", "--num-envs", "1", "--steps", "40", "--learning-starts", "20",
         "--batch-size", "4", "--buffer-size", "512", "--eval-every", "40", "--eval-episodes", "1",
         "--eval-max-steps", "10", "--log-every", "8"]
COMMON = ["--no-progress", "--metrics-every", "0", "--device", "cpu", "--seed", "0", "--no-checkpoint-replay"]


def defined(norm: str, torso: str) -> bool:
    return (1 if torso == "mlp" else 2) in NORMS.entry(norm).meta.get("dims", (1, 2))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only contend on busy cores
    yield
    torch.set_num_threads(n)


def _updates(run_root: Path) -> float:
    events = sorted(run_root.rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {run_root}"
    best = 0.0
    for ev in events:
        acc = EventAccumulator(str(ev.parent), size_guidance={"scalars": 0})
        acc.Reload()
        if "train/updates" in acc.Tags()["scalars"]:
            best = max(best, max(e.value for e in acc.Scalars("train/updates")))
    return best


@pytest.mark.parametrize("torso", TORSOS)
@pytest.mark.parametrize("norm", NORMS.names())
def test_cli_smoke(norm, torso, tmp_path, monkeypatch, capsys):
    argv = (GYM if torso == "mlp" else ATARI) + COMMON + ["--torso", torso, "--norm", norm,
                                                          "--run-dir", str(tmp_path), "--name", "smoke"]
    if not defined(norm, torso):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --norm") and norm in err[0], err
        return

    seen: dict = {}
    update = DQNAgent.update

    def spy(self, b=None):
        if "before" not in seen:
            seen["before"] = {n: p.detach().clone() for n, p in self.network.named_parameters()}
        seen["agent"] = self
        update(self, b)

    monkeypatch.setattr(DQNAgent, "update", spy)
    rc = main(argv)
    assert rc == 0, capsys.readouterr().err
    assert _updates(tmp_path) >= 1
    after = dict(seen["agent"].network.named_parameters())
    changed = [n for n, p in seen["before"].items() if not torch.equal(p, after[n].detach())]
    assert changed, "no parameter changed in training"
