"""MinAtar DQN speed: crl against a reference-style loop, side by side in one run.

The reference-style loop (:func:`reference_loop`) is written for crl from the facts of the
MinAtar paper (Young & Tian 2019, arXiv 1903.03176) and of ``examples/dqn.py`` in
github.com/kenjyoung/MinAtar (read, not copied): one ``minatar.Environment``; the state as a
``(1, C, 10, 10)`` float tensor each step; transitions kept as tuples of tensors in a Python
list used as a circular buffer of 100,000; ``random.sample`` of 32 transitions stacked with
``torch.cat`` each update; Conv(16, 3x3, stride 1) -> ReLU -> Linear(128) -> ReLU ->
Linear(6); ``max`` over the target network for the bootstrap; ``smooth_l1_loss``; centered
``torch.optim.RMSprop(lr=2.5e-4, alpha=0.95, eps=0.01)``; one update per env step after
5,000 random steps; epsilon 1.0 -> 0.1 over the next 100,000 steps; target copy every 1,000
updates.

crl runs ``crl minatar`` with the same preset through its runner (the ``minatar`` preset:
same hyperparameters), plasticity metrics off (``--metrics-every 0``; the reference has none),
evaluation and checkpoints outside the measured window.

Both first take the 5,000 random steps and ``--warmup`` steps with updates (not measured: crl's
``minatar`` preset compiles its optimizer step at the first update, a one-off cost of 15-70 s
per run), then ``--steps`` measured steps with one update per env step at epsilon 0.1 (the exploration of 98% of a 5M-step run: measured right after
the start, epsilon near 1 would let the reference skip its acting forward on almost every step
while crl always runs it); the two alternate ``--repeats`` times (A B A B ...) so that load from other
processes on a shared machine hits both alike. Reported per implementation: env steps/s over
the measured window (median over repeats), ms per update (sample + loss + backward + optimizer
step), and the share of the measured time outside the update (acting, env, replay writes, logging).

    OMP_NUM_THREADS=1 python scripts/bench_minatar.py --game breakout --steps 3000 --repeats 3
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
from pathlib import Path

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


def reference_update(policy: nn.Module, target: nn.Module, opt: torch.optim.Optimizer, s: torch.Tensor,
                     s2: torch.Tensor, a: torch.Tensor, r: torch.Tensor, term: torch.Tensor) -> torch.Tensor:
    """One update of the reference on a stacked batch (states ``(B, C, 10, 10)`` floats, ``a``, ``r``
    and ``term`` ``(B, 1)``): Huber loss of ``Q(s, a)`` against ``r + gamma (1 - term) max_a' Q_target(s', a')``."""
    q_sa = policy(s).gather(1, a)
    with torch.no_grad():
        q_next = target(s2).max(1)[0].unsqueeze(1)
    y = r + GAMMA * (1 - term) * q_next
    loss = F.smooth_l1_loss(q_sa, y)
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
    ``returns``: a list that gets ``(env steps, return)`` at the end of every episode (then
    ``eps_decay=100_000`` and ``warmup=0`` make it a whole training run of the reference,
    ``scripts/minatar_reference_returns.py``)."""
    from minatar import Environment

    random.seed(seed)
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
        return torch.tensor(env.state(), dtype=torch.float32).permute(2, 0, 1).unsqueeze(0)

    def train():
        nonlocal updates
        batch = random.sample(buffer, BATCH)
        reference_update(policy, target, opt, *(torch.cat(x) for x in zip(*batch)))
        updates += 1
        if updates % TARGET_EVERY == 0:
            target.load_state_dict(policy.state_dict())

    env.reset()
    state = get_state()
    t = 0
    start = None
    episode_return = 0.0
    while t < LEARNING_STARTS + warmup + steps:
        if t == LEARNING_STARTS + warmup:
            start = time.perf_counter()
            update_time, updates = 0.0, 0
        if t < LEARNING_STARTS:
            action = torch.tensor([[random.randrange(actions)]])
        else:
            eps = max(0.1, 1.0 - 0.9 * (t - LEARNING_STARTS) / eps_decay)
            if random.random() < eps:
                action = torch.tensor([[random.randrange(actions)]])
            else:
                with torch.no_grad():
                    action = policy(state).max(1)[1].view(1, 1)
        reward, done = env.act(action.item())
        next_state = get_state()
        transition = (state, next_state, action, torch.tensor([[float(reward)]]), torch.tensor([[float(done)]]))
        if len(buffer) < REPLAY:
            buffer.append(transition)
        else:
            buffer[location] = transition
        location = (location + 1) % REPLAY
        t += 1
        if t > LEARNING_STARTS and len(buffer) >= BATCH:
            u0 = time.perf_counter()
            train()
            update_time += time.perf_counter() - u0
        episode_return += reward
        if done:
            if returns is not None:
                returns.append((t, episode_return))
            episode_return = 0.0
            env.reset()
            state = get_state()
        else:
            state = next_state
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
    train, update = learner.train, learner.update

    def timed_update():
        u0 = time.perf_counter()
        update()
        timing["update"] += time.perf_counter() - u0
        timing["updates"] += 1

    def timed_train(task, n):
        if learner.env_steps < LEARNING_STARTS + warmup:  # the runner's first chunk: random steps + warmup
            return train(task, n)
        learner.update = timed_update
        t0 = time.perf_counter()
        done = train(task, n)
        timing["train"] += time.perf_counter() - t0
        timing["steps"] += done
        learner.update = update
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
    p.add_argument("--num-envs", type=int, default=1, help="crl's --num-envs (the preset and the reference: 1; "
                   "more envs share one acting forward, same updates per env step)")
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    results: dict[str, list[dict]] = {"reference": [], "crl": []}
    for r in range(args.repeats):
        results["reference"].append(reference_loop(args.game, args.steps, args.seed + r, args.warmup))
        results["crl"].append(crl_loop(args.game, args.steps, args.seed + r, args.warmup, {"num_envs": args.num_envs}))
        print(f"repeat {r}: " + "; ".join(f"{k} {v[-1]['steps_per_s']:.0f} steps/s" for k, v in results.items()),
              file=sys.stderr, flush=True)
    summary = {k: {m: statistics.median(x[m] for x in v) for m in ("steps_per_s", "ms_per_update", "outside_update")}
               for k, v in results.items()}
    ratio = summary["crl"]["steps_per_s"] / summary["reference"]["steps_per_s"]
    print(f"MinAtar {args.game}, {args.steps} measured steps after {LEARNING_STARTS} random and {args.warmup} warm-up, "
          f"epsilon 0.1, one update "
          f"per step, batch {BATCH}, crl --num-envs {args.num_envs}, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats}")
    print(f"{'':<10} {'env steps/s':>12} {'ms/update':>10} {'outside update':>15}")
    for k, s in summary.items():
        print(f"{k:<10} {s['steps_per_s']:>12.0f} {s['ms_per_update']:>10.2f} {100 * s['outside_update']:>14.1f}%")
    print(f"crl / reference: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": results, "median": summary,
                                               "ratio": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
