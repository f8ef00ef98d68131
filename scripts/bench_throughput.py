"""Training throughput of crl's Atari DQN against Stable-Baselines3's, and the raw env speed.

Each system runs in its own process. The processes are set up one after another (imports,
replay fill, burn-in), then driven round robin, one timed window at a time (every other
repeat in reverse order), so only one of them works at any moment and a machine that gets
busier slows all systems alike. Medians over the repeats; the crl/SB3 ratio is the median
of the per-repeat ratios.

* ``crl-hlgauss``, ``crl-dqn``: ``crl atari --agent dqn-hlgauss`` / ``dqn`` (double DQN, as crl
  runs them), all other settings equal to SB3's below;
* ``crl-dqn-single``: ``crl atari --agent dqn --no-double-dqn``: SB3's algorithm exactly
  (Huber loss, max over the target network); the headline ratio;
* ``crl-dqn-plain``: the same with every speed option off (what agents/fast.py buys);
* ``sb3-dqn``: SB3 ``DQN("CnnPolicy")`` on ``BreakoutNoFrameskip-v4`` with ``make_atari_env`` +
  ``VecFrameStack(4)`` (SB3's standard Atari pipeline); same network (Nature CNN + linear),
  batch 32, one update per 4 env steps (``train_freq``/``gradient_steps`` scaled to the
  number of envs), buffer size, target period, Adam eps, gradient clip 10;
* ``raw-env``: ``ale_py.AtariVectorEnv`` (crl's Breakout settings) stepped with random actions;
* ``crl-act``: crl's training loop with updates off (acting + env stepping + replay writes),
  same number of envs as ``raw-env`` (16): its speed over ``raw-env``'s is the acting overhead;
* CUDA only: ``crl-hlgauss-graphs`` (``--cuda-graphs``).

Learning systems fill ``--learning-starts`` env steps (epsilon reaches 0.01 there, so the
measured phase acts greedily 99% of the time in both libraries), run ``--burn-in`` more
steps with updates, then each window times ``--steps`` env steps. Reported: env steps/s, the
crl/SB3 ratio, where the time goes (env stepping, acting, replay sampling, the network
update, the NaN guard, everything else), crl's share of time outside the network update,
peak resident memory of the process (and peak CUDA memory), and replay bytes per stored
transition. The guard's share is its host sync and its copy of the parameters; the gradient
norms it reads are the clip's (``crl.reliability.grad_norms``), counted in the update.
Shares come from wrappers around the library's own methods; on CUDA they are measured in
a second, synchronised window of ``--steps // 4`` steps (the first one gives the speed).

    python scripts/bench_throughput.py                      # CPU, ~7 min on 2 cores under load 10
    python scripts/bench_throughput.py --device cuda        # one GPU run (~6 min)
    python scripts/bench_throughput.py --systems crl-dqn-single,sb3-dqn --repeats 5

Appends a markdown section (date, machine, command, table) to docs/results/throughput.md
(raw numbers to throughput.json beside it) unless ``--no-write``. SB3's own Atari pipeline
needs OpenCV (``pip install opencv-python-headless``); without it (``--sb3-env auto``) SB3
runs on crl's ale-py vector env behind an SB3 ``VecEnv``, which the table says.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "throughput.md"
LEARNERS = {  # system -> crl config overrides (besides the shared settings)
    "crl-hlgauss": dict(agent="dqn-hlgauss"),
    "crl-dqn": dict(agent="dqn"),
    "crl-dqn-single": dict(agent="dqn", double_dqn=False),
    "crl-dqn-plain": dict(agent="dqn", double_dqn=False, fused_optimizer=False, channels_last=False,
                          overlap_env=False, fused_forward=False),
    # ablations of crl-dqn-single: one speed option switched each
    "crl-dqn-single-no-fused-adam": dict(agent="dqn", double_dqn=False, fused_optimizer=False),
    "crl-dqn-single-no-channels-last": dict(agent="dqn", double_dqn=False, channels_last=False),
    "crl-dqn-single-no-overlap": dict(agent="dqn", double_dqn=False, overlap_env=False),
    "crl-dqn-fused-forward": dict(agent="dqn", fused_forward=True),
    "crl-hlgauss-graphs": dict(agent="dqn-hlgauss", cuda_graphs=True),
    "crl-hlgauss-compile": dict(agent="dqn-hlgauss", compile=True),
}
DEFAULT_SYSTEMS = {
    "cpu": "crl-hlgauss,crl-dqn,crl-dqn-single,sb3-dqn,raw-env,crl-act",
    "cuda": "crl-hlgauss,crl-hlgauss-graphs,crl-dqn-single,sb3-dqn,raw-env,crl-act",
}
DEFAULTS = {  # per device: (steps, learning_starts, burn_in, repeats, num_envs, env_steps, threads)
    "cpu": dict(steps=400, learning_starts=1_000, burn_in=80, repeats=3, num_envs=8, env_steps=4_000, threads=1),
    "cuda": dict(steps=10_000, learning_starts=5_000, burn_in=1_000, repeats=2, num_envs=16, env_steps=20_000,
                 threads=0),
}
PARTS = ("env", "act", "sample", "update", "guard", "add")


# ----------------------------------------------------------------------------- timing helpers

class Clock:
    """Accumulates wall time of wrapped callables; ``sync`` waits for the GPU before reading."""

    def __init__(self, sync: bool = False):
        self.sync = sync
        self.total = dict.fromkeys(PARTS, 0.0)
        self.on = False

    def wrap(self, part: str, fn):
        import torch

        sync = self.sync and torch.cuda.is_available()

        def timed(*args, **kwargs):
            if not self.on:
                return fn(*args, **kwargs)
            if sync:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if sync:
                    torch.cuda.synchronize()
                self.total[part] += time.perf_counter() - t0

        return timed

    def start(self):
        self.total = dict.fromkeys(PARTS, 0.0)
        self.on = True

    def shares(self, wall: float) -> dict:
        t = dict(self.total)
        # nested: update() contains sample and guard; report the network update without them
        t["update"] = max(t["update"] - t["sample"] - t["guard"], 0.0)
        t["other"] = max(wall - sum(t[p] for p in ("env", "act", "sample", "update", "guard", "add")), 0.0)
        return {k: v / wall for k, v in t.items()}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _set_threads(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- workers

def _crl_cfg(args, overrides: dict, run_dir: str, num_envs: int, learning_starts: int):
    from crl.config import make_config

    return make_config(
        "atari", game="breakout", device=args.device, seed=args.seed, num_envs=num_envs,
        buffer_size=args.buffer_size, batch_size=32, train_freq=4, learning_starts=learning_starts,
        target_update=1_000, eps_start=1.0, eps_end=0.01, eps_decay_steps=args.learning_starts,
        max_grad_norm=10.0, adam_eps=1.5e-4, lr=6.25e-5, metrics_every=0, progress=False,
        log_every=1_000, checkpoint_replay=False, run_dir=run_dir, name="bench", **overrides)


def _crl_learner(args, overrides: dict, num_envs: int, learning_starts: int):
    from crl import api
    from crl.runner import Runner

    run_dir = tempfile.mkdtemp(prefix="crl-bench-")
    cfg = _crl_cfg(args, overrides, run_dir, num_envs, learning_starts)
    scenario, learner, hooks = api.prepare(cfg)
    runner = Runner(cfg, scenario, learner, hooks, api.run_directory(cfg, scenario))
    hooks.on_run_start(runner)
    hooks.on_task_start(runner, 0, scenario.tasks[0])
    task = scenario.tasks[0]
    learner.train(task, 0)  # creates the env
    return learner, task, runner


def _instrument_crl(learner, clock: Clock) -> None:
    import crl.learner as learner_module

    env, cfg = learner.env, learner.cfg
    for name in (("send", "recv") if cfg.overlap_env and hasattr(env, "send") else ("step",)):  # ale's step calls send
        setattr(env, name, clock.wrap("env", getattr(env, name)))
    learner.act = clock.wrap("act", learner.act)
    learner.sample_batch = clock.wrap("sample", learner.sample_batch)
    # the updates due at an env step draw their batches (and the target's outputs on them) together, before
    # the first of them: that time counts as update time, the replay draw in it as sample time
    learner.sample_batches = clock.wrap("update", learner.sample_batches)
    learner.update = clock.wrap("update", learner.update)
    learner.replay.add = clock.wrap("add", learner.replay.add)
    if not hasattr(learner_module, "_bench_original_check_finite"):
        learner_module._bench_original_check_finite = learner_module.check_finite
    learner_module.check_finite = clock.wrap("guard", learner_module._bench_original_check_finite)


def _timed(run, clock: Clock | None, cuda: bool) -> tuple[int, float]:
    import torch

    if clock is not None:
        clock.start()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    done = run()
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    if clock is not None:
        clock.on = False
    return done, wall


class CrlWorker:
    """crl's training loop: ``setup`` fills replay and burns in, each ``window`` trains ``--steps``."""

    def __init__(self, args, system: str):
        self.args, self.system = args, system
        self.cuda = args.device == "cuda"
        self.acting_only = system == "crl-act"

    def setup(self) -> None:
        import torch

        args = self.args
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        if self.acting_only:  # 16 envs, updates never start
            self.learner, self.task, self.runner = _crl_learner(args, dict(agent="dqn-hlgauss"), 16, 1 << 40)
            self.steps = args.env_steps
        else:
            self.learner, self.task, self.runner = _crl_learner(args, LEARNERS[self.system], args.num_envs,
                                                                args.learning_starts)
            self.steps = args.steps
        self.clock = Clock()
        _instrument_crl(self.learner, self.clock)
        if self.acting_only:
            self.learner.train(self.task, 800)
        else:
            self.learner.train(self.task, args.learning_starts)  # random-policy fill, no updates
            self.learner.train(self.task, args.burn_in)  # first updates: allocator, kernel caches, captures

    def window(self, shares: bool = True, sync: bool = False, steps: int | None = None) -> dict:
        self.clock.sync = sync
        updates0 = self.learner.updates
        done, wall = _timed(lambda: self.learner.train(self.task, steps or self.steps),
                            self.clock if shares else None, self.cuda)
        out = {"sps": done / wall, "steps": done, "wall": wall, "updates": self.learner.updates - updates0}
        if shares:
            out["shares"] = self.clock.shares(wall)
        return out

    def final(self) -> dict:
        import torch

        learner = self.learner
        out = {"bytes_per_transition": learner.replay.bytes_per_transition(), "peak_rss_mib": _peak_rss_mib(),
               "graphed": bool(getattr(learner, "graphed_loss", None) is not None
                               and learner.graphed_loss.graph is not None)}
        if self.cuda:
            out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        learner.env.close()
        self.runner.logger.close()
        return out


class RawEnvWorker:
    """``ale_py.AtariVectorEnv`` with crl's Breakout settings, 16 envs, random actions."""

    def __init__(self, args, system: str):
        self.args = args

    def setup(self) -> None:
        import numpy as np

        from scenarios.atari import make_atari_env

        self.n = 16
        self.env = make_atari_env("breakout", self.n, self.args.seed)
        self.env.reset(seed=self.args.seed)
        self.rng = np.random.default_rng(self.args.seed)
        self.actions = self.env.single_action_space.n
        for _ in range(50):
            self.env.step(self.rng.integers(self.actions, size=self.n))

    def _run(self) -> int:
        steps = 0
        while steps < self.args.env_steps:
            self.env.step(self.rng.integers(self.actions, size=self.n))
            steps += self.n
        return steps

    def window(self, shares: bool = True, sync: bool = False, steps: int | None = None) -> dict:
        done, wall = _timed(self._run, None, False)
        return {"sps": done / wall, "steps": done, "wall": wall}

    def final(self) -> dict:
        self.env.close()
        return {"peak_rss_mib": _peak_rss_mib()}


def _sb3_ale_vec_env(n: int, seed: int):
    """ale-py's C++ vector env (crl's Breakout settings, SAME_STEP autoreset) as an SB3 VecEnv.

    For ``--sb3-env ale``: SB3 learns from the very env crl uses, so only the learners differ
    (and SB3 runs where OpenCV, which its own AtariWrapper needs, is not installed)."""
    import numpy as np
    from ale_py import AtariVectorEnv
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv

    class ALEVecEnv(VecEnv):
        def __init__(self):
            self.ale = AtariVectorEnv("breakout", n, repeat_action_probability=0.25, reward_clipping=True,
                                      episodic_life=False, autoreset_mode="SameStep")
            super().__init__(n, self.ale.single_observation_space, self.ale.single_action_space)
            self.actions = None

        def reset(self):
            obs, _ = self.ale.reset(seed=seed)
            return obs

        def step_async(self, actions):
            self.actions = np.asarray(actions)

        def step_wait(self):
            obs, rew, term, trunc, info = self.ale.step(self.actions)
            dones = term | trunc
            infos = [{} for _ in range(n)]
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = info["final_obs"][i]
                infos[i]["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
            return obs, rew.astype(np.float32), dones, infos

        def close(self):
            self.ale.close()

        def get_attr(self, attr_name, indices=None):
            return [getattr(self, attr_name, None)] * n

        def set_attr(self, attr_name, value, indices=None):
            pass

        def env_method(self, method_name, *method_args, indices=None, **method_kwargs):
            return [None] * n

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * n

    return ALEVecEnv()


class Sb3Worker:
    """SB3's DQN; ``setup`` fills replay and burns in, each ``window`` is one more ``learn(--steps)``."""

    def __init__(self, args, system: str):
        self.args = args
        self.cuda = args.device == "cuda"

    def setup(self) -> None:
        import torch
        from stable_baselines3 import DQN

        args = self.args
        n = args.num_envs
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        if n % 4 == 0:  # one update per 4 env steps, whatever the number of envs
            train_freq, gradient_steps = 1, n // 4
        elif 4 % n == 0:
            train_freq, gradient_steps = 4 // n, 1
        else:
            raise SystemExit(f"sb3-dqn: --num-envs {n} must divide 4 or be a multiple of 4")
        if args.sb3_env == "sb3":  # SB3's own Atari pipeline (AtariWrapper needs OpenCV)
            import ale_py
            import gymnasium as gym
            from stable_baselines3.common.env_util import make_atari_env
            from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

            gym.register_envs(ale_py)
            env = VecFrameStack(make_atari_env("BreakoutNoFrameskip-v4", n_envs=n, seed=args.seed,
                                               vec_env_cls=DummyVecEnv), 4)
        else:
            env = _sb3_ale_vec_env(n, args.seed)
        fill = args.learning_starts + args.burn_in
        self.model = model = DQN(
            "CnnPolicy", env, learning_rate=6.25e-5, buffer_size=args.buffer_size,
            learning_starts=args.learning_starts, batch_size=32, gamma=0.99, train_freq=train_freq,
            gradient_steps=gradient_steps, target_update_interval=1_000, exploration_initial_eps=1.0,
            exploration_final_eps=0.01, exploration_fraction=args.learning_starts / fill, max_grad_norm=10.0,
            policy_kwargs=dict(optimizer_kwargs=dict(eps=1.5e-4)), seed=args.seed, device=args.device, verbose=0)
        self.clock = clock = Clock()
        model.env.step = clock.wrap("env", model.env.step)
        model.predict = clock.wrap("act", model.predict)
        model.train = clock.wrap("update", model.train)
        model.replay_buffer.sample = clock.wrap("sample", model.replay_buffer.sample)
        model.replay_buffer.add = clock.wrap("add", model.replay_buffer.add)
        model.learn(total_timesteps=fill)
        model.exploration_schedule = lambda _progress: 0.01  # later learn() calls: epsilon stays at its end value

    def _learn(self, steps: int) -> int:
        t0 = self.model.num_timesteps
        self.model.learn(total_timesteps=steps, reset_num_timesteps=False)
        return self.model.num_timesteps - t0

    def window(self, shares: bool = True, sync: bool = False, steps: int | None = None) -> dict:
        self.clock.sync = sync
        updates0 = self.model._n_updates
        done, wall = _timed(lambda: self._learn(steps or self.args.steps), self.clock if shares else None, self.cuda)
        out = {"sps": done / wall, "steps": done, "wall": wall, "updates": self.model._n_updates - updates0}
        if shares:
            out["shares"] = self.clock.shares(wall)
        return out

    def final(self) -> dict:
        import torch

        rb = self.model.replay_buffer
        arrays = [getattr(rb, k) for k in ("observations", "next_observations", "actions", "rewards", "dones",
                                           "timeouts") if getattr(rb, k, None) is not None]
        out = {"bytes_per_transition": sum(a.nbytes for a in arrays) / (rb.buffer_size * rb.n_envs),
               "peak_rss_mib": _peak_rss_mib()}
        if self.cuda:
            out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        return out


def worker(args) -> int:
    """Serve one system: ``setup``, then one line of JSON per command read from stdin
    (``window``, ``shares`` = a synchronised window of ``--steps // 4`` for CUDA shares, ``quit``)."""
    _set_threads(args.threads)
    system = args.worker
    cls = {"sb3-dqn": Sb3Worker, "raw-env": RawEnvWorker, "crl-act": CrlWorker}.get(system)
    if cls is None and system in LEARNERS:
        cls = CrlWorker
    if cls is None:
        raise SystemExit(f"unknown system {system}")
    w = cls(args, system)
    t0 = time.perf_counter()
    w.setup()
    print("RESULT " + json.dumps({"setup_s": time.perf_counter() - t0}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "window":
            out = w.window(shares=args.device != "cuda")
        elif cmd == "shares":
            out = w.window(shares=True, sync=True, steps=max(args.steps // 4, 1))
        elif cmd == "quit":
            print("RESULT " + json.dumps(w.final()), flush=True)
            return 0
        else:
            out = {"error": f"unknown command {cmd}"}
        print("RESULT " + json.dumps(out), flush=True)
    return 0


# ----------------------------------------------------------------------------- orchestration

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _machine(args) -> dict:
    import torch

    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": args.threads if args.threads > 0 else torch.get_num_threads(),
            "python": platform.python_version()}
    try:
        import ale_py
        import stable_baselines3

        info.update(ale_py=ale_py.__version__, sb3=stable_baselines3.__version__)
    except ImportError:
        pass
    if args.device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


class Proc:
    """One system's worker process: set up once, then driven window by window (``request``)."""

    def __init__(self, args, system: str, forward: list[str]):
        self.system, self.timeout = system, args.timeout
        self.err = tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", system, *forward]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                  cwd=ROOT, bufsize=1)
        self.dead: str | None = None
        self.setup = self._read()

    def _read(self) -> dict:
        import selectors

        if self.dead:
            return {"error": self.dead}
        sel = selectors.DefaultSelector()
        sel.register(self.p.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + self.timeout
        while True:
            if not sel.select(timeout=max(deadline - time.monotonic(), 0.0)):
                self.p.kill()
                self.dead = f"no answer within {self.timeout} s"
                return {"error": self.dead}
            line = self.p.stdout.readline()
            if not line:  # the worker died
                self.p.wait()
                self.err.seek(0)
                tail = [ln for ln in self.err.read().strip().splitlines() if ln.strip()][-3:]
                self.dead = (" | ".join(tail)[-300:] or f"exit code {self.p.returncode}")
                return {"error": self.dead}
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])

    def request(self, cmd: str) -> dict:
        if self.dead:
            return {"error": self.dead}
        t0 = time.perf_counter()
        try:
            self.p.stdin.write(cmd + "\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            pass
        out = self._read()
        out["elapsed"] = time.perf_counter() - t0
        return out

    def close(self) -> dict:
        out = self.request("quit")
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
        return out


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarise(results: dict[str, list[dict]], finals: dict[str, dict], extra_shares: dict[str, dict]) -> dict:
    summary = {}
    sb3 = results.get("sb3-dqn", [])
    raw = results.get("raw-env", [])
    for system, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        fin = finals.get(system, {})
        s = {"runs": len(ok), "errors": [r["error"] for r in runs if "error" in r] + ([fin["error"]] if "error" in fin
                                                                                     else [])}
        if ok:
            s["sps"] = _median([r["sps"] for r in ok])
            s["sps_all"] = [round(r["sps"], 2) for r in ok]
            for key in ("peak_rss_mib", "peak_cuda_mib", "bytes_per_transition", "graphed"):
                s[key] = fin.get(key)
            with_shares = [r["shares"] for r in ok if "shares" in r] or (
                [extra_shares[system]["shares"]] if "shares" in extra_shares.get(system, {}) else [])
            if with_shares:
                s["shares"] = {k: _median([sh[k] for sh in with_shares]) for k in with_shares[0]}
            # ratios within each repeat: the windows of one repeat ran back to back
            for name, ref in (("vs_sb3", sb3), ("vs_raw", raw)):
                pairs = [r["sps"] / q["sps"] for r, q in zip(runs, ref) if "error" not in r and "error" not in q]
                if pairs:
                    s[name] = _median(pairs)
        summary[system] = s
    return summary


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def markdown(args, machine: dict, summary: dict, command: str, started: str, load: tuple) -> str:
    lines = [f"### {started} — {args.device}" + (f" ({machine['gpu']})" if machine.get("gpu") else ""), ""]
    lines.append(f"- machine: {machine['cpu']}, {machine['cores']} cores; torch {machine['torch']} with "
                 f"{machine['threads']} thread(s); ale-py {machine.get('ale_py')}, SB3 {machine.get('sb3')}, "
                 f"Python {machine['python']}; load average {load[0]:.1f} at start, {load[1]:.1f} at end")
    lines.append(f"- command: `{command}`")
    lines.append(f"- settings: Breakout, {args.num_envs} envs for the learners, batch 32, one update per 4 env steps, "
                 f"buffer {args.buffer_size:,}, learning starts {args.learning_starts:,}, burn-in {args.burn_in:,}, "
                 f"measured {args.steps:,} env steps per run; env rows: 16 envs, {args.env_steps:,} steps; "
                 f"{args.repeats} repeats, systems interleaved; medians (ratios: median of per-repeat ratios); SB3 env: "
                 + ("SB3's make_atari_env + VecFrameStack" if args.sb3_env == "sb3" else
                    "crl's ale-py vector env behind an SB3 VecEnv"))
    lines.append("")
    lines.append("| system | env steps/s | runs | x SB3 | env % | act % | sample % | update % | NaN guard % | "
                 "replay add % | other % | outside update % | peak RSS MiB | B / transition |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for system, s in summary.items():
        if not s["runs"]:
            lines.append(f"| {system} | failed: {s['errors'][0] if s['errors'] else '?'} |||||||||||||")
            continue
        sh = s.get("shares") or {}
        outside = None if not sh else 1.0 - sh.get("update", 0.0)
        peak = f"{s['peak_rss_mib']:,.0f}" + (f" (CUDA {s['peak_cuda_mib']:,.0f})" if s.get("peak_cuda_mib") else "")
        bpt = s.get("bytes_per_transition")
        ratio = s.get("vs_sb3") if system not in ("raw-env", "crl-act", "sb3-dqn") else None
        name = system + (" (graph captured)" if s.get("graphed") else "")
        lines.append(
            f"| {name} | {s['sps']:,.1f} | {s['runs']} | {'' if ratio is None else f'{ratio:.2f}'} | "
            f"{_pct(sh.get('env'))} | {_pct(sh.get('act'))} | {_pct(sh.get('sample'))} | {_pct(sh.get('update'))} | "
            f"{_pct(sh.get('guard'))} | {_pct(sh.get('add'))} | {_pct(sh.get('other'))} | {_pct(outside)} | {peak} | "
            f"{'' if bpt is None else f'{bpt:,.0f}'} |")
    lines.append("")
    notes = []
    if "crl-act" in summary and summary["crl-act"].get("vs_raw") is not None:
        notes.append(f"acting + env stepping (16 envs, updates off) / raw vector env: "
                     f"{100 * summary['crl-act']['vs_raw']:.0f}% (target >= 80%)")
    for system in ("crl-dqn-single", "crl-dqn", "crl-hlgauss"):
        s = summary.get(system, {})
        if s.get("vs_sb3") is not None and s.get("shares"):
            notes.append(f"{system}: {s['vs_sb3']:.2f}x SB3 (target >= 1.3x), "
                         f"{100 * (1 - s['shares']['update']):.1f}% of wall time outside the network update "
                         f"(target < 15%)")
    lines += [f"- {n}" for n in notes]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--steps", type=int, help="measured env steps per window (cpu 400, cuda 10000)")
    ap.add_argument("--repeats", type=int, help="runs per system (cpu 3, cuda 2)")
    ap.add_argument("--systems", help=f"comma-separated; default cpu: {DEFAULT_SYSTEMS['cpu']}; "
                                      f"cuda: {DEFAULT_SYSTEMS['cuda']}; others: {', '.join(LEARNERS)}")
    ap.add_argument("--num-envs", type=int, help="envs of the learners, crl and SB3 alike (cpu 8, cuda 16)")
    ap.add_argument("--learning-starts", type=int, help="env steps before the first update (cpu 1000, cuda 5000)")
    ap.add_argument("--burn-in", type=int, help="env steps with updates before the timed window")
    ap.add_argument("--env-steps", type=int, help="steps of the raw-env and crl-act rows")
    ap.add_argument("--threads", type=int, help="torch threads in every process (cpu 1; cuda 0 = torch default)")
    ap.add_argument("--sb3-env", choices=("auto", "sb3", "ale"), default="auto",
                    help="SB3's env: sb3 = make_atari_env + VecFrameStack (needs opencv-python-headless), ale = "
                         "crl's ale-py vector env behind an SB3 VecEnv; auto = sb3 when OpenCV is importable")
    ap.add_argument("--buffer-size", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run before it counts as failed")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--no-write", action="store_true", help="print the table, do not append it to --results")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.sb3_env == "auto":
        try:
            import cv2  # noqa: F401

            args.sb3_env = "sb3"
        except ImportError:
            args.sb3_env = "ale"
    forward = ["--device", args.device, "--steps", str(args.steps), "--num-envs", str(args.num_envs),
               "--learning-starts", str(args.learning_starts), "--burn-in", str(args.burn_in),
               "--env-steps", str(args.env_steps), "--threads", str(args.threads),
               "--buffer-size", str(args.buffer_size), "--seed", str(args.seed), "--repeats", "1",
               "--sb3-env", args.sb3_env]

    if args.worker:
        sys.path.insert(0, str(ROOT))
        return worker(args)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    systems = [s.strip() for s in (args.systems or DEFAULT_SYSTEMS[args.device]).split(",") if s.strip()]
    command = "python scripts/bench_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.strftime("%Y-%m-%d %H:%M")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    procs: dict[str, Proc] = {}
    for system in systems:  # set up one after another: fills and burn-ins never overlap
        procs[system] = Proc(args, system, forward)
        setup = procs[system].setup
        print(f"[{time.perf_counter() - t0:6.0f}s] {system}: " +
              (setup.get("error") or f"set up in {setup['setup_s']:.0f}s"), flush=True)
    results: dict[str, list[dict]] = {s: [] for s in systems}
    for rep in range(args.repeats):  # round robin, one process working at a time; every other repeat in
        for system in (systems if rep % 2 == 0 else systems[::-1]):  # reverse order (cancels a steady drift)
            r = procs[system].request("window")
            results[system].append(r)
            msg = r.get("error") or f"{r['sps']:,.1f} env steps/s"
            print(f"[{time.perf_counter() - t0:6.0f}s] repeat {rep + 1}/{args.repeats} {system}: {msg}", flush=True)
    extra_shares = {}
    if args.device == "cuda":  # shares from one synchronised window each (the timed windows stay asynchronous)
        extra_shares = {s: procs[s].request("shares") for s in systems if s != "raw-env"}
    finals = {s: procs[s].close() for s in systems}
    summary = summarise(results, finals, extra_shares)
    text = markdown(args, _machine(args), summary, command.strip(), started, (load0, os.getloadavg()[0]))
    print()
    print(text)
    print(f"total wall time {time.perf_counter() - t0:.0f} s")
    raw_path = Path(args.results).with_suffix(".json")
    if not args.no_write:
        path = Path(args.results)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text("# Training throughput: crl vs SB3 (scripts/bench_throughput.py)\n\n")
        with path.open("a") as f:
            f.write(text + "\n")
        runs = json.loads(raw_path.read_text()) if raw_path.exists() else []
        runs.append({"started": started, "command": command, "args": vars(args), "summary": summary,
                     "results": results, "finals": finals})
        raw_path.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
