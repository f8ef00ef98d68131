"""Tests of agents.replay.ReplayBuffer (frame-deduplicated vector-env replay).

Every check compares the buffer with an independent Python model of the documented
per-lane protocol (``RefLanes`` below: which logical slot each transition gets, what its
observations were, which windows are still intact) fed with the very same steps, so a
wrong stack, a stale slot, a sampled autoreset transition or a wrong n-step target fails.
"""
from __future__ import annotations

import io

import ale_py
import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.replay import ReplayBuffer

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class RefLanes:
    """Reference model: a plain list of transitions per lane, with their logical slots.

    Protocol (module doc of agents/replay.py): a transition opening an episode in its lane
    takes ``stack + 1`` slots (stack - 1 padding, its obs frame, its next frame), a continuing
    one takes 1 slot (its next frame); a lane keeps the last ``lane`` slots written.
    """

    def __init__(self, num_envs: int, lane: int, stack: int):
        self.n, self.lane, self.stack = num_envs, lane, stack
        self.written = [0] * num_envs
        self.open = [False] * num_envs
        self.trans: list[list[dict]] = [[] for _ in range(num_envs)]

    def add(self, obs, actions, rewards, next_obs, terminated, truncated, valid):
        for e in range(self.n):
            if not valid[e]:
                if self.open[e]:  # episode cut by an invalid step: it ends there, bootstrapped
                    self.trans[e][-1]["end"] = True
                    self.open[e] = False
                continue
            if self.open[e]:
                j = self.written[e] - 1
                self.written[e] += 1
            else:
                j = self.written[e] + self.stack - 1
                self.written[e] += self.stack + 1
            done = bool(terminated[e] or truncated[e])
            self.trans[e].append(dict(j=j, obs=np.array(obs[e]), next_obs=np.array(next_obs[e]),
                                      action=int(actions[e]), reward=float(rewards[e]),
                                      term=bool(terminated[e]), end=done))
            self.open[e] = not done

    def expected(self, n_step: int, gamma: float) -> dict[int, dict]:
        """flat slot id -> expected batch entry, for every transition that must be sampleable."""
        out = {}
        for e in range(self.n):
            ts = self.trans[e]
            lo = max(0, self.written[e] - self.lane)  # oldest logical slot still stored
            for q, t in enumerate(ts):
                if t["j"] - (self.stack - 1) < lo:
                    continue  # its stack reaches into overwritten slots
                ret, k, last = 0.0, 0, None
                while k < n_step and q + k < len(ts) and ts[q + k]["j"] == t["j"] + k:
                    last = ts[q + k]
                    ret += gamma**k * last["reward"]
                    k += 1
                    if last["end"]:
                        break
                if not (last["end"] or k == n_step):
                    continue  # n-step window not complete yet
                out[e * self.lane + t["j"] % self.lane] = dict(
                    obs=t["obs"], action=t["action"], ret=ret, next_obs=last["next_obs"],
                    disc=0.0 if last["term"] else gamma**k)
        return out


def check_buffer(buf: ReplayBuffer, ref: RefLanes, n_step: int = 1, gamma: float = 0.99) -> int:
    """Exhaustive comparison of every sampleable transition; returns how many there are."""
    exp = ref.expected(n_step, gamma)
    got = buf.valid_indices(n_step).cpu().tolist()
    assert sorted(got) == sorted(exp), "set of sampleable transitions differs from the reference model"
    if n_step == 1:
        assert len(buf) == len(exp)
    if not exp:
        return 0
    batch = buf.get(torch.tensor(got), n_step, gamma)
    obs, nxt = batch["obs"].cpu().numpy(), batch["next_obs"].cpu().numpy()
    for i, slot in enumerate(got):
        x = exp[slot]
        np.testing.assert_array_equal(obs[i], x["obs"])
        np.testing.assert_array_equal(nxt[i], x["next_obs"])
        assert int(batch["actions"][i]) == x["action"]
        assert float(batch["returns"][i]) == pytest.approx(x["ret"], rel=1e-5, abs=1e-5)
        assert float(batch["discounts"][i]) == pytest.approx(x["disc"], rel=1e-5, abs=1e-7)
    return len(exp)


def _key(obs, next_obs) -> bytes:
    return np.asarray(obs).tobytes() + np.asarray(next_obs).tobytes()


# ---------------------------------------------------------------- (1) real Atari frames

@pytest.mark.parametrize("device", DEVICES)
def test_atari_vector_env_stacks_exact_and_autoreset_never_sampled(device):
    num_envs, lane, stack, steps = 2, 150, 4, 400
    # episodic_life + a 100-frame (25-step) cap: both terminations and truncations happen
    env = ale_py.AtariVectorEnv("breakout", num_envs=num_envs, max_num_frames_per_episode=100,
                                episodic_life=True, num_threads=1, repeat_action_probability=0.25)
    buf = ReplayBuffer(num_envs * lane, num_envs, (stack, 84, 84), stack, torch.uint8, device, seed=1)
    ref = RefLanes(num_envs, lane, stack)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    prev_done = np.zeros(num_envs, bool)
    autoreset_pairs, n_term, n_trunc = set(), 0, 0
    try:
        for step in range(steps):
            actions = rng.integers(0, env.single_action_space.n, num_envs)
            next_obs, reward, term, trunc, _ = env.step(actions)
            valid = ~prev_done
            for e in np.flatnonzero(~valid):
                autoreset_pairs.add(_key(obs[e], next_obs[e]))
            rew = np.clip(reward, -1, 1).astype(np.float32)
            buf.add(obs, actions, rew, next_obs, term, trunc, valid)
            ref.add(obs, actions, rew, next_obs, term, trunc, valid)
            n_term += int(term.sum())
            n_trunc += int((trunc & ~term).sum())
            prev_done = term | trunc
            obs = next_obs
            if step % 100 == 99:
                assert check_buffer(buf, ref, 1) > 0
                batch = buf.sample(256)
                o, no = batch["obs"].cpu().numpy(), batch["next_obs"].cpu().numpy()
                assert all(_key(o[i], no[i]) not in autoreset_pairs for i in range(256))
    finally:
        env.close()
    assert n_term > 0 and n_trunc > 0 and autoreset_pairs
    assert min(ref.written) > 2 * lane  # the lanes wrapped around twice
    # the stored next_obs after a done step is the true final obs, not the reset obs
    check_buffer(buf, ref, 3, 0.9)
    # every sampled transition is exactly the one the env produced at that slot
    exp = ref.expected(1, 0.99)
    batch = buf.sample(512)
    for i, slot in enumerate(batch["indices"].cpu().tolist()):
        np.testing.assert_array_equal(batch["obs"][i].cpu().numpy(), exp[slot]["obs"])
        np.testing.assert_array_equal(batch["next_obs"][i].cpu().numpy(), exp[slot]["next_obs"])
        assert _key(exp[slot]["obs"], exp[slot]["next_obs"]) not in autoreset_pairs
    assert batch["obs"].dtype == torch.uint8 and batch["obs"].device.type == torch.device(device).type
    assert batch["actions"].dtype == torch.long and batch["returns"].dtype == torch.float32


# ---------------------------------------------------------------- (2) episode boundaries

class StackEnv:
    """Synthetic NEXT_STEP vector env of frames whose value is a unique id = episode * 1000 + t.

    ``padding`` "zero" (ALE vector env) or "reset" (FrameStackObservation default). Episode
    lengths are drawn per episode (1 to 7 steps, shorter than the stack included); an
    episode ends terminated or truncated at random.
    """

    def __init__(self, num_envs, stack, padding, seed=0):
        self.n, self.stack, self.padding = num_envs, stack, padding
        self.rng = np.random.default_rng(seed)
        self.next_episode = 1

    def _new(self, e):
        self.ep[e], self.t[e] = self.next_episode, 0
        self.next_episode += 1
        self.len[e] = self.rng.integers(1, 8)
        first = self.ep[e] * 1000
        pad = 0 if self.padding == "zero" else first
        self.frames[e] = [pad] * (self.stack - 1) + [first]

    def reset(self):
        self.ep, self.t, self.len = [0] * self.n, [0] * self.n, [0] * self.n
        self.frames, self.done = [None] * self.n, [False] * self.n
        for e in range(self.n):
            self._new(e)
        return self.obs()

    def obs(self):
        return np.array([[np.full((2, 3), f, np.int32) for f in fr] for fr in self.frames])

    def step(self):
        term, trunc = np.zeros(self.n, bool), np.zeros(self.n, bool)
        for e in range(self.n):
            if self.done[e]:  # NEXT_STEP autoreset
                self._new(e)
                self.done[e] = False
                continue
            self.t[e] += 1
            self.frames[e] = self.frames[e][1:] + [self.ep[e] * 1000 + self.t[e]]
            if self.t[e] >= self.len[e]:
                self.done[e] = True
                term[e] = self.rng.random() < 0.5
                trunc[e] = not term[e]
        return self.obs(), term, trunc


@pytest.mark.parametrize("padding", ["zero", "reset"])
def test_stack_never_mixes_episodes(padding):
    num_envs, lane, stack = 3, 20, 4
    env = StackEnv(num_envs, stack, padding, seed=3)
    buf = ReplayBuffer(num_envs * lane, num_envs, (stack, 2, 3), stack, torch.int32, "cpu", seed=0)
    ref = RefLanes(num_envs, lane, stack)
    rng = np.random.default_rng(1)
    obs = env.reset()
    prev_done = np.zeros(num_envs, bool)
    checked = 0
    for step in range(150):
        next_obs, term, trunc = env.step()
        valid = ~prev_done
        actions = rng.integers(0, 6, num_envs)
        rewards = rng.normal(size=num_envs).astype(np.float32)
        buf.add(obs, actions, rewards, next_obs, term, trunc, valid)
        ref.add(obs, actions, rewards, next_obs, term, trunc, valid)
        prev_done = term | trunc
        obs = next_obs
        checked += check_buffer(buf, ref, 1)
        if len(buf) == 0:
            continue
        batch = buf.sample(64, n_step=2, gamma=0.9)
        for o, no in zip(batch["obs"][:, :, 0, 0].tolist(), batch["next_obs"][:, :, 0, 0].tolist()):
            ep = o[-1] // 1000
            # every frame is from the transition's episode (or zero padding) ...
            assert all(f == 0 or f // 1000 == ep for f in o + no), (o, no)
            # ... and consecutive in time; repeats only as padding before the episode's first frame
            real = [f for f in o if f != 0]
            assert all(b - a == 1 or (b == a == ep * 1000) for a, b in zip(real, real[1:])), o
    assert checked > 500


def test_invalid_step_inside_open_episode_closes_it_and_end_episodes():
    stack = 2
    buf = ReplayBuffer(40, 1, (stack, 1), stack, torch.float32, "cpu")
    o = lambda a, b: np.array([[[a], [b]]], np.float32)  # noqa: E731
    f, t = np.array([False]), np.array([True])
    buf.add(o(0, 1), [0], [1.0], o(1, 2), f, f, t)
    buf.add(o(1, 2), [1], [2.0], o(2, 3), f, f, t)
    buf.add(o(2, 3), [2], [9.0], o(70, 71), f, f, f)  # invalid step while the episode was open
    buf.add(o(0, 50), [3], [4.0], o(50, 51), f, f, t)  # a new episode, not stacked onto frame 3
    buf.end_episodes()  # e.g. the env was reset by the runner
    buf.add(o(80, 81), [4], [5.0], o(81, 82), f, f, t)
    b = buf.get(buf.valid_indices(3), n_step=3, gamma=0.5)
    rows = {int(x[-1, 0]): i for i, x in enumerate(b["obs"])}
    assert sorted(rows) == [1, 2, 50]  # 81's episode is open: its 3-step window is not there yet
    i = rows[1]  # 1 -> 2 -> 3, then the cut: bootstrapped from frame 3 after two steps
    assert b["returns"][i] == pytest.approx(1 + 0.5 * 2) and b["discounts"][i] == pytest.approx(0.25)
    assert b["next_obs"][i].flatten().tolist() == [2, 3]
    i = rows[50]  # closed by end_episodes(): bootstrapped after one step
    assert b["obs"][i].flatten().tolist() == [0, 50] and b["discounts"][i] == pytest.approx(0.5)
    b1 = buf.get(buf.valid_indices(1), n_step=1, gamma=0.5)
    rows1 = {int(x[-1, 0]): i for i, x in enumerate(b1["obs"])}
    assert sorted(rows1) == [1, 2, 50, 81] and len(buf) == 4
    i = rows1[81]  # its own stack, not [51, 81]
    assert b1["obs"][i].flatten().tolist() == [80, 81] and b1["next_obs"][i].flatten().tolist() == [81, 82]
    assert 9.0 not in b["returns"].tolist() + b1["returns"].tolist()  # the invalid step's reward


# ---------------------------------------------------------------- (3) n-step targets

def test_n_step_returns_and_discounts_by_hand():
    g = 0.5
    buf = ReplayBuffer(64, 1, (1,), 1, torch.float32, "cpu")
    f, t = np.array([False]), np.array([True])

    def episode(first, rewards, end):  # states first, first+1, ...; end in {"term", "trunc", None}
        for k, r in enumerate(rewards):
            last = k == len(rewards) - 1
            buf.add([[first + k]], [k], [r], [[first + k + 1]], [last and end == "term"], [last and end == "trunc"], t)
        if end:  # the NEXT_STEP autoreset step that follows a done step
            buf.add([[first + len(rewards)]], [0], [123.0], [[-1.0]], f, f, f)

    episode(100, [1, 2, 3, 4], "term")
    episode(200, [10, 20, 30], "trunc")
    episode(300, [1, 2, 3, 4, 5], None)
    b = buf.get(buf.valid_indices(3), n_step=3, gamma=g)
    got = {int(o): (float(r), float(d), int(no)) for o, r, d, no in
           zip(b["obs"][:, 0], b["returns"], b["discounts"], b["next_obs"][:, 0])}
    want = {
        100: (1 + g * 2 + g**2 * 3, g**3, 103),
        101: (2 + g * 3 + g**2 * 4, 0.0, 104),  # terminates on the window's last step: no bootstrap
        102: (3 + g * 4, 0.0, 104),  # terminates after 2 steps
        103: (4, 0.0, 104),
        200: (10 + g * 20 + g**2 * 30, g**3, 203),  # truncated on the last step: bootstrap from final obs
        201: (20 + g * 30, g**2, 203),
        202: (30, g, 203),
        300: (1 + g * 2 + g**2 * 3, g**3, 303),
        301: (2 + g * 3 + g**2 * 4, g**3, 304),
        302: (3 + g * 4 + g**2 * 5, g**3, 305),
        # 303 and 304: the episode goes on, their 3-step window is not there yet
    }
    assert got.keys() == want.keys()
    for k, (r, d, no) in want.items():
        assert got[k][0] == pytest.approx(r) and got[k][1] == pytest.approx(d) and got[k][2] == no, k
    # n_step=1 is the plain one-step target, and every stored transition counts for len()
    b1 = buf.get(buf.valid_indices(1), n_step=1, gamma=g)
    assert len(buf) == 12 and b1["obs"].shape == (12, 1)
    d1 = {int(o): float(d) for o, d in zip(b1["obs"][:, 0], b1["discounts"])}
    assert d1[103] == 0.0 and d1[202] == pytest.approx(g) and d1[304] == pytest.approx(g)
    # sample() draws only from the 3-step-valid set
    s = buf.sample(500, n_step=3, gamma=g)
    assert set(s["obs"][:, 0].tolist()) == set(float(k) for k in want)
    with pytest.raises(ValueError):
        buf.get(torch.tensor([int(buf.valid_indices(1).max())]), n_step=3, gamma=g)


# ---------------------------------------------------------------- (4) memory

def test_bytes_per_transition_atari_within_1_1_frames():
    buf = ReplayBuffer(20_000, 8, (4, 84, 84), 4, torch.uint8, "cpu")
    frame = 84 * 84
    assert frame <= buf.bytes_per_transition() <= 1.1 * frame
    assert buf.nbytes() == pytest.approx(buf.bytes_per_transition() * 20_000)


# ---------------------------------------------------------------- (5) checkpoint round trip

def _fill(buf, steps, seed):
    env = StackEnv(buf.num_envs, buf.stack, "zero", seed=seed)
    rng = np.random.default_rng(seed)
    obs, prev_done = env.reset(), np.zeros(buf.num_envs, bool)
    for _ in range(steps):
        next_obs, term, trunc = env.step()
        buf.add(obs, rng.integers(0, 4, buf.num_envs), rng.normal(size=buf.num_envs), next_obs, term, trunc,
                ~prev_done)
        prev_done, obs = term | trunc, next_obs
    return env, obs, prev_done


@pytest.mark.parametrize("device", DEVICES)
def test_state_dict_round_trip_samples_identically(device):
    mk = lambda: ReplayBuffer(3 * 25, 3, (4, 2, 3), 4, torch.int32, device, seed=7)  # noqa: E731
    a = mk()
    _fill(a, 120, seed=5)
    for _ in range(3):  # advance the sampling generator past its seed state
        a.sample(32, n_step=3)
    raw = io.BytesIO()
    torch.save(a.state_dict(), raw)
    raw.seek(0)
    state = torch.load(raw, map_location="cpu", weights_only=True)
    b = mk()
    b.load_state_dict(state)
    assert len(a) == len(b) > 0 and a.nbytes() == b.nbytes()
    for n in (1, 3, 1):
        x, y = a.sample(64, n_step=n, gamma=0.9), b.sample(64, n_step=n, gamma=0.9)
        for k in x:
            assert torch.equal(x[k], y[k]), k
    # storing the same further steps keeps both identical (host bookkeeping restored too)
    rng = np.random.default_rng(9)
    for _ in range(30):
        o = rng.integers(1, 99, (3, 4, 2, 3))
        no = rng.integers(1, 99, (3, 4, 2, 3))
        te, tr, va = rng.random(3) < 0.1, rng.random(3) < 0.1, rng.random(3) < 0.9
        for buf in (a, b):
            buf.add(o, [1, 2, 3], [0.5, 1.0, -1.0], no, te, tr, va)
    assert len(a) == len(b)
    assert torch.equal(a.valid_indices(2), b.valid_indices(2))
    x, y = a.sample(64, n_step=2), b.sample(64, n_step=2)
    assert all(torch.equal(x[k], y[k]) for k in x)
    # the generator state is what makes it identical: a fresh generator samples otherwise
    c = mk()
    fresh = dict(state, rng_state=torch.Generator().manual_seed(7).get_state())  # sampling draws on the host
    c.load_state_dict(fresh)
    d = mk()
    d.load_state_dict(state)
    assert not torch.equal(c.sample(64)["indices"], d.sample(64)["indices"])
    with pytest.raises(ValueError):
        ReplayBuffer(3 * 26, 3, (4, 2, 3), 4, torch.int32, device).load_state_dict(state)


def test_cpu_numpy_writes_equal_the_device_path():
    """On CPU, ``add`` writes and ``sample`` gathers through numpy views of the storage; on CUDA
    through ``index_copy_`` and ``index_select``. Forcing the device path on CPU must leave every
    stored byte and every sample (values, dtypes, shapes) identical."""
    fast, torch_path = (ReplayBuffer(3 * 25, 3, (4, 2, 3), 4, torch.int32, "cpu", seed=7) for _ in range(2))
    torch_path._numpy_writes = False
    for buf in (fast, torch_path):
        _fill(buf, 120, seed=5)  # wraps every lane several times, with resets and invalid steps
        buf.end_episodes()
    for k, v in fast.state_dict().items():
        other = torch_path.state_dict()[k]
        assert (torch.equal(v, other) if isinstance(v, torch.Tensor) else v == other), k
    for n_step in (1, 3):
        x, y = fast.sample(64, n_step=n_step), torch_path.sample(64, n_step=n_step)
        assert x.keys() == y.keys()
        assert all(x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]) for k in x)


# ---------------------------------------------------------------- (6) vector observations

def test_cartpole_vector_obs_stack_1():
    num_envs, lane = 3, 60
    env = gym.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="sync", max_episode_steps=15)
    buf = ReplayBuffer(num_envs * lane, num_envs, (4,), 1, torch.float32, "cpu", seed=0)
    ref = RefLanes(num_envs, lane, 1)
    obs, _ = env.reset(seed=0)
    prev_done = np.zeros(num_envs, bool)
    env.action_space.seed(0)
    n_term = n_trunc = 0
    for step in range(250):
        actions = env.action_space.sample()
        next_obs, reward, term, trunc, _ = env.step(actions)
        buf.add(obs, actions, reward, next_obs, term, trunc, ~prev_done)
        ref.add(obs, actions, reward, next_obs, term, trunc, ~prev_done)
        n_term += int(term.sum())
        n_trunc += int((trunc & ~term).sum())
        prev_done, obs = term | trunc, next_obs
        if step % 50 == 49:
            check_buffer(buf, ref, 1)
            check_buffer(buf, ref, 4, 0.97)
    env.close()
    assert n_term > 0 and n_trunc > 0 and min(ref.written) > lane
    b = buf.sample(128, n_step=2)
    assert b["obs"].shape == (128, 4) and b["obs"].dtype == torch.float32
    assert b["next_obs"].shape == (128, 4) and b["indices"].dtype == torch.long


# ---------------------------------------------------------------- sampling distribution, errors

def test_sampling_is_uniform_over_transitions_not_lanes():
    # lane 0 holds one long episode, lane 1 many 1-step episodes (mostly padding): a sampler
    # that picked a lane first would over-sample lane 1's few transitions
    stack, lane = 4, 40
    buf = ReplayBuffer(2 * lane, 2, (stack, 1), stack, torch.float32, "cpu", seed=3)
    t, f = np.array([True, True]), np.array([False, False])
    ob = np.zeros((2, stack, 1), np.float32)
    for k in range(30):
        done = np.array([False, k % 2 == 0])
        buf.add(ob, [0, 1], [0.0, 0.0], ob, f, done, np.array([True, k % 2 == 0]))
    idx = buf.valid_indices(1)
    n = idx.numel()
    counts = torch.bincount(buf.sample(40_000)["indices"], minlength=2 * lane)[idx].double()
    assert counts.sum() == 40_000 and len(buf) == n
    expect = 40_000 / n
    assert (counts - expect).abs().max() < 5 * expect**0.5
    lane1 = int((idx >= lane).sum())
    assert 0 < lane1 < n / 2


def test_errors_are_clear():
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(16, 4, (4, 84, 84), 4, torch.uint8)
    with pytest.raises(ValueError, match="obs_shape"):
        ReplayBuffer(1000, 1, (84, 84, 4), 4, torch.uint8)
    buf = ReplayBuffer(100, 2, (4,), 1, torch.float32)
    with pytest.raises(ValueError, match="no sampleable"):
        buf.sample(8)
    with pytest.raises(ValueError, match="next_obs"):
        buf.add(np.zeros((2, 4)), [0, 0], [0, 0], np.zeros((2, 3)), [0, 0], [0, 0], [1, 1])
