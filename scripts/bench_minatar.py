"""MinAtar DQN speed: crl against a reference-style loop, side by side in one run.

The reference-style loop (:func:`reference_loop`) is written for crl from the facts of the
MinAtar paper (Young & Tian 2019, arXiv 1903.03176) and of ``examples/dqn.py`` in
github.com/kenjyoung/MinAtar (read, not copied), and does per step what that script does: one
``minatar.Environment``; the state as a ``(1, C, 10, 10)`` float tensor each step, the action,
reward and terminal flag as tensors; the epsilon draw with ``numpy.random.binomial``;
transitions as namedtuples of tensors in a Python list used as a circular buffer of 100,000;
``random.sample`` of 32 transitions, unzipped and stacked with ``torch.cat`` each update;
Conv(16, 3x3, stride 1) -> ReLU -> Linear(128) -> ReLU -> Linear(6); the non-terminal next
states found by a Python loop over the batch and only they sent through the target network
(``max`` over actions); ``smooth_l1_loss``; centered ``torch.optim.RMSprop(lr=2.5e-4,
alpha=0.95, eps=0.01)``; one update per env step after 5,000 random steps; epsilon 1.0 -> 0.1
over the next 100,000 steps; target copy every 1,000 updates.

crl runs ``crl minatar`` with the same preset through its runner (the ``minatar`` preset:
same hyperparameters), plasticity metrics off (``--metrics-every 0``; the reference has none),
evaluation and checkpoints outside the measured window.

Each first takes the 5,000 random steps and ``--warmup`` steps with updates (not measured:
crl's ``minatar`` preset compiles its optimizer step at the first update, a one-off cost of
15-70 s per run), then ``--steps`` measured steps with one update per env step at epsilon 0.1
(the exploration of 98% of a 5M-step run: measured right after the start, epsilon near 1
would let the reference skip its acting forward on almost every step while crl always runs
it). The reference and the crl rows (one per ``--num-envs`` value) take turns ``--repeats``
times (A B C A B C ...) so that load from other processes on a shared machine hits all alike.
Reported per row: env steps/s over the measured window (median over repeats) and its ratio to
the reference's, ms per update (sample + loss + backward + optimizer step), and the share of
the measured time outside the update (acting, env, replay writes, logging).

    OMP_NUM_THREADS=1 python scripts/bench_minatar.py --game breakout --steps 3000 --repeats 3 --num-envs 1 8
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LEARNING_STARTS = 5_000
REPLAY = 100_000
BATCH = 32
GAMMA = 0.99
TARGET_EVERY = 1_000


class ReferenceNet(nn.Module):
    def __init__(self, channels: int, actions: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 16, kernel_size=3, stride=1)
        self.fc = nn.Linear(16 * 8 * 8, 128)
        self.out = nn.Linear(128, actions)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = F.relu(self.fc(x.view(x.shape[0], -1)))
        return self.out(x)


Transition = namedtuple("Transition", "state next_state action reward terminal")


def reference_update(policy: nn.Module, target: nn.Module, opt: torch.optim.Optimizer, s: torch.Tensor,
                     s2: torch.Tensor, a: torch.Tensor, r: torch.Tensor, term: torch.Tensor) -> torch.Tensor:
    """One update of the reference on a stacked batch (states ``(B, C, 10, 10)`` floats, ``a``, ``r``
    and ``term`` ``(B, 1)``): Huber loss of ``Q(s, a)`` against ``r + gamma max_a' Q_target(s', a')``,
    the bootstrap 0 for terminal ``s'``. As ``examples/dqn.py``'s ``train``: the non-terminal rows are
    found by a Python loop over the batch, only they go through the target network, and
    ``smooth_l1_loss`` gets the target first."""
    q_sa = policy(s).gather(1, a)
    live = torch.tensor([i for i, done in enumerate(term) if done == 0], dtype=torch.int64)
    q_next = torch.zeros(len(s), 1)
    if len(live):
        q_next[live] = target(s2.index_select(0, live)).detach().max(1)[0].unsqueeze(1)
    loss = F.smooth_l1_loss(r + GAMMA * q_next, q_sa)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def reference_optimizer(policy: nn.Module) -> torch.optim.RMSprop:
    """The reference's centered RMSprop (lr 2.5e-4, squared-gradient decay 0.95, eps 0.01)."""
    return torch.optim.RMSprop(policy.parameters(), lr=2.5e-4, alpha=0.95, centered=True, eps=0.01)


def reference_loop(game: str, steps: int, seed: int, warmup: int, eps_decay: int = 1,
                   returns: list | None = None) -> dict:
    """The reference's structure; returns timings of the ``steps`` steps after learning starts.

    Per env step, as ``examples/dqn.py``: the epsilon draw with ``numpy.random.binomial``, the action
    as a ``(1, 1)`` tensor passed to ``env.act``, the next state, reward and terminal flag as
    tensors, a ``Transition`` namedtuple appended to a list (overwritten in a circle once full),
    ``reward.item()`` added to the return; per update ``random.sample`` of the list, unzipped and
    ``torch.cat``'d field by field, then :func:`reference_update`. The first update comes at the step
    whose frame count before it exceeds 5,000, and the target copy after every 1,000th update.
    ``returns``: a list that gets ``(env steps, return)`` at the end of every episode (then
    ``eps_decay=100_000`` and ``warmup=0`` make it a whole training run of the reference,
    ``scripts/minatar_reference_returns.py``)."""
    from minatar import Environment

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    env = Environment(game)  # sticky actions 0.1, difficulty ramping: MinAtar's defaults
    env.seed(seed)
    actions = env.num_actions()
    channels = env.state_shape()[2]
    policy, target = ReferenceNet(channels, actions), ReferenceNet(channels, actions)
    target.load_state_dict(policy.state_dict())
    opt = reference_optimizer(policy)
    buffer: list = []
    location = 0
    updates = 0
    update_time = 0.0

    def get_state():
        return torch.tensor(env.state()).permute(2, 0, 1).unsqueeze(0).float()

    def act(t, s):
        if t < LEARNING_STARTS:
            return torch.tensor([[random.randrange(actions)]])
        eps = max(0.1, 1.0 - 0.9 * (t - LEARNING_STARTS) / eps_decay)
        if np.random.binomial(1, eps) == 1:
            return torch.tensor([[random.randrange(actions)]])
        with torch.no_grad():
            return policy(s).max(1)[1].view(1, 1)

    def train():
        batch = Transition(*zip(*random.sample(buffer, BATCH)))
        reference_update(policy, target, opt, torch.cat(batch.state), torch.cat(batch.next_state),
                         torch.cat(batch.action), torch.cat(batch.reward), torch.cat(batch.terminal))

    t = 0
    start = None
    while t < LEARNING_STARTS + warmup + steps:
        env.reset()
        s = get_state()
        episode_return, terminal = 0.0, False
        while not terminal and t < LEARNING_STARTS + warmup + steps:
            if t == LEARNING_STARTS + warmup:
                start = time.perf_counter()
                update_time, updates = 0.0, 0
            action = act(t, s)
            reward, terminal = env.act(action)
            s_next = get_state()
            reward = torch.tensor([[reward]]).float()
            transition = Transition(s, s_next, action, reward, torch.tensor([[terminal]]))
            if len(buffer) < REPLAY:
                buffer.append(transition)
            else:
                buffer[location] = transition
            location = (location + 1) % REPLAY
            if t > LEARNING_STARTS and len(buffer) >= BATCH:
                u0 = time.perf_counter()
                train()
                update_time += time.perf_counter() - u0
                updates += 1
                if updates % TARGET_EVERY == 0:
                    target.load_state_dict(policy.state_dict())
            episode_return += reward.item()
            t += 1
            s = s_next
        if returns is not None and terminal:
            returns.append((t, episode_return))
    total = time.perf_counter() - start
    return {"steps_per_s": steps / total, "ms_per_update": 1e3 * update_time / max(updates, 1),
            "outside_update": 1.0 - update_time / total, "updates": updates}


def crl_loop(game: str, steps: int, seed: int, warmup: int, extra: dict) -> dict:
    """``crl minatar`` through crl's runner; times the learner's ``train`` chunks after learning starts."""
    from crl.api import prepare
    from crl.config import make_config
    from crl.registry import load_builtins
    from crl.runner import Runner

    load_builtins()
    cfg = make_config("minatar", scenario="minatar", game=game, seed=seed, steps=LEARNING_STARTS + warmup + steps,
                      eval_every=LEARNING_STARTS + warmup, eval_episodes=1, eval_max_steps=10, checkpoint_every=10 ** 9,
                      metrics_every=0, progress=False, eps_decay_steps=1, **extra)
    scenario, learner, hooks = prepare(cfg)
    timing = {"train": 0.0, "update": 0.0, "updates": 0, "steps": 0}
    train, update, sample_batches = learner.train, learner.update, learner.sample_batches

    def timed_update(*args):
        u0 = time.perf_counter()
        update(*args)
        timing["update"] += time.perf_counter() - u0
        timing["updates"] += 1

    def timed_sample_batches(count):  # the batches of the updates due at an env step, drawn before them
        u0 = time.perf_counter()
        batches = sample_batches(count)
        timing["update"] += time.perf_counter() - u0
        return batches

    def timed_train(task, n):
        if learner.env_steps < LEARNING_STARTS + warmup:  # the runner's first chunk: random steps + warmup
            return train(task, n)
        learner.update, learner.sample_batches = timed_update, timed_sample_batches
        t0 = time.perf_counter()
        done = train(task, n)
        timing["train"] += time.perf_counter() - t0
        timing["steps"] += done
        learner.update, learner.sample_batches = update, sample_batches
        return done

    learner.train = timed_train
    with tempfile.TemporaryDirectory() as tmp:
        Runner(cfg, scenario, learner, hooks, Path(tmp) / "run").run()
    total = timing["train"]
    return {"steps_per_s": timing["steps"] / total, "ms_per_update": 1e3 * timing["update"] / max(timing["updates"], 1),
            "outside_update": 1.0 - timing["update"] / total, "updates": timing["updates"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--game", default="breakout")
    p.add_argument("--steps", type=int, default=3_000, help="measured env steps (after the 5,000 random ones)")
    p.add_argument("--warmup", type=int, default=500, help="steps with updates before the measured ones")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-envs", type=int, nargs="+", default=[1],
                   help="crl's --num-envs, one crl row each (the preset and the reference: 1; n envs share one "
                        "acting forward and one replay draw for the n updates due after their step, still one "
                        "update per env step)")
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = {"reference": None, **{f"crl, {n} env{'s' if n > 1 else ''}": n for n in args.num_envs}}
    results: dict[str, list[dict]] = {k: [] for k in rows}
    for r in range(args.repeats):
        for k, n in rows.items():
            results[k].append(reference_loop(args.game, args.steps, args.seed + r, args.warmup) if n is None else
                              crl_loop(args.game, args.steps, args.seed + r, args.warmup, {"num_envs": n}))
        print(f"repeat {r}: " + "; ".join(f"{k} {v[-1]['steps_per_s']:.0f} steps/s" for k, v in results.items()),
              file=sys.stderr, flush=True)
    summary = {k: {m: statistics.median(x[m] for x in v) for m in ("steps_per_s", "ms_per_update", "outside_update")}
               for k, v in results.items()}
    ratios = {k: s["steps_per_s"] / summary["reference"]["steps_per_s"] for k, s in summary.items()}
    print(f"MinAtar {args.game}, {args.steps} measured steps after {LEARNING_STARTS} random and {args.warmup} warm-up, "
          f"epsilon 0.1, one update per env step, batch {BATCH}, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats}")
    print(f"{'':<14} {'env steps/s':>12} {'x reference':>12} {'ms/update':>10} {'outside update':>15}")
    for k, s in summary.items():
        print(f"{k:<14} {s['steps_per_s']:>12.0f} {ratios[k]:>11.2f}x {s['ms_per_update']:>10.2f} "
              f"{100 * s['outside_update']:>14.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": results, "median": summary,
                                               "ratio": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
