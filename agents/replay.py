"""Frame-deduplicated, vectorised replay buffer for DQN-style agents.

Storage model
-------------
The buffer has one circular *lane* of ``capacity // num_envs`` slots per environment of a
vector env. Each slot holds ONE frame (``obs[-1]`` of a stacked observation, or the whole
observation when ``stack == 1``), plus the action, the (already clipped) reward, a flag
byte and a task-index byte of the transition that *starts* at that frame. A stacked
observation is rebuilt from the ``stack`` consecutive slots of the same lane that end at
its frame, so an 84x84 uint8 Atari transition costs one frame (7,056 B) plus a few bytes,
instead of 28,224 B (SB3/CleanRL ``optimize_memory_usage``) or 56,448 B (obs + next_obs stored
naively). The idea of storing single
frames and re-stacking them at sampling time is the one of the original DQN replay memory
(Mnih et al., Nature 2015) and of Dopamine's ``OutOfGraphReplayBuffer``; the lane layout,
the episode-start protocol and the validity rules below are written for this project.

Per-lane protocol (one ``add`` = one vector-env step)
----------------------------------------------------
* ``valid=False`` marks the bogus NEXT_STEP autoreset transition of gymnasium >= 1.0 vector
  envs and ``ale_py.AtariVectorEnv``: nothing is stored. If the
  lane's episode was still open (not terminated/truncated), it is closed as if truncated:
  its last stored transition bootstraps from its own ``next_obs``.
* A transition that starts a new episode in its lane (first add, previous stored transition
  terminated or truncated, or an invalid step since) writes ``obs[:-1]`` as ``stack - 1``
  padding slots that are never sampled themselves, then ``obs[-1]`` as the start frame. The
  stack is therefore rebuilt EXACTLY, whatever padding the environment used (zeros for
  ALE's vector env, the reset frame for ``FrameStackObservation(padding_type="reset")``),
  and never reaches into the previous episode.
* Every valid add then writes ``next_obs[-1]`` as the following slot. A terminated or
  truncated transition's final frame is stored (truncation bootstraps from it) but is not
  the start of a transition; the lane's next valid add opens a new episode.

So a continuing add writes 1 slot, an episode-opening add ``stack + 1`` slots: every
episode of ``T`` transitions uses ``T + stack`` slots.

Validity of a sample
--------------------
A transition starting at slot ``p`` with an ``n``-step window of ``m <= n`` steps (``m``
stops after the first terminated/truncated/closed transition) is sampleable iff

* its slot carries the START flag and every transition inside the window does too (a
  window never runs past the newest frame of the lane, nor across an episode end);
* the ``stack - 1`` slots before ``p`` and the ``m`` slots after it have not been
  overwritten by the circular writes (checked with each slot's age relative to the lane's
  write cursor).

``sample`` draws candidates uniformly over all ``num_envs * lane`` slots with the
buffer's own ``torch.Generator`` and keeps the valid ones (rejection sampling): the result
is an i.i.d. uniform draw over sampleable transitions, with replacement, with no Python
loop over the batch. Candidates are drawn and checked on the host, against the host mirror
of the flags, and only the gathers (frames, actions, rewards) run on ``device``: on CUDA,
``add`` and ``sample`` never wait for the GPU (host-to-device copies go through pinned
memory, non-blocking), so the training loop can queue updates while the env steps.

n-step targets (Sutton & Barto 2018, section 7.1; Hessel et al. 2018 "Rainbow")
    returns   = sum_{k<m} gamma^k r_{t+k}
    discounts = gamma^m * (1 - terminated_{t+m-1})
    next_obs  = the stacked observation after step t+m-1 (the true final observation on
                truncation: bootstrap through truncation).
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["ReplayBuffer"]

_START = 1  # the slot starts a stored transition (action/reward/flags below are meaningful)
_TERM = 2  # that transition terminated: no bootstrap
_END = 4  # that transition is the last of its stored episode (terminated, truncated or closed)
_TRUNC = 8  # informational: the env reported truncation

_STATE_VERSION = 1


def host_to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (on the host) on ``device`` without a host-device sync.

    On CUDA the copy goes through pinned memory with ``non_blocking=True`` (PyTorch's caching
    host allocator keeps the pinned block alive until the copy has run); elsewhere it is
    ``t.to(device)`` (a no-op on CPU).
    """
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _host_bool(x: Any, n: int, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x).astype(bool, copy=False).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"ReplayBuffer.add: {name} must have {n} entries (one per env), got shape {np.shape(x)}")
    return arr


class ReplayBuffer:
    """Frame-deduplicated circular replay buffer, one lane per vector-env member.

    Args:
        capacity: total transitions; each env gets ``capacity // num_envs`` slots.
        num_envs: number of environments of the vector env feeding ``add``.
        obs_shape: the full observation shape of one env, e.g. ``(4, 84, 84)`` with
            ``stack=4`` (frame axis first) or ``(4,)`` with ``stack=1``.
        stack: number of frames in one observation (1 = the observation is the frame).
        obs_dtype: storage and output dtype of observations (``torch.uint8`` for Atari).
        device: where all storage lives and where ``sample`` returns its tensors.
        seed: seed of the sampling ``torch.Generator``.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: tuple,
        stack: int,
        obs_dtype: torch.dtype,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        obs_shape = tuple(int(s) for s in obs_shape)
        if num_envs < 1:
            raise ValueError(f"ReplayBuffer: num_envs must be >= 1, got {num_envs}")
        if stack < 1:
            raise ValueError(f"ReplayBuffer: stack must be >= 1, got {stack}")
        if stack > 1 and (len(obs_shape) < 2 or obs_shape[0] != stack):
            raise ValueError(
                f"ReplayBuffer: with stack={stack} obs_shape must have the frame axis first "
                f"(obs_shape[0] == {stack}), got obs_shape={obs_shape}"
            )
        lane = int(capacity) // int(num_envs)
        if lane < 2 * stack + 2:
            raise ValueError(
                f"ReplayBuffer: capacity={capacity} gives {lane} slots per env with num_envs={num_envs}; "
                f"need at least {2 * stack + 2} (2 * stack + 2), raise capacity"
            )
        self.num_envs = int(num_envs)
        self.stack = int(stack)
        self.obs_shape = obs_shape
        self.frame_shape = obs_shape[1:] if stack > 1 else obs_shape
        self.obs_dtype = obs_dtype
        self.lane = lane
        self.capacity = lane * self.num_envs  # effective capacity (a multiple of num_envs)
        self.device = torch.device(device)
        self.seed = int(seed)

        n, length = self.num_envs, self.lane
        # frames are written before they are read (the validity rules guarantee it): empty is
        # safe and keeps a large CPU buffer from committing its pages up front
        self._frames = torch.empty((n, length, *self.frame_shape), dtype=obs_dtype, device=self.device)
        self._actions = torch.zeros((n, length), dtype=torch.int32, device=self.device)
        self._rewards = torch.zeros((n, length), dtype=torch.float32, device=self.device)
        self._flags = torch.zeros((n, length), dtype=torch.uint8, device=self.device)
        # task index of each stored transition (``add(..., task=i)``; ``sample()['task_ids']``), for
        # task-aware norms (AdaB2N); one byte per slot, at most 255
        self._tasks = torch.zeros((n, length), dtype=torch.uint8, device=self.device)
        # host mirror of the flags: the bookkeeping of add/len never waits for the device
        self._flags_host = np.zeros((n, length), dtype=np.uint8)
        self._written = np.zeros(n, dtype=np.int64)  # slots ever written per lane (logical clock)
        self._open = np.zeros(n, dtype=bool)  # lane's episode open: its newest frame starts the next transition
        self._last_start = np.zeros(n, dtype=np.int64)  # slot of the lane's newest stored transition
        self._starts_total = np.zeros(n, dtype=np.int64)  # transitions ever stored per lane
        self._starts_below = np.zeros(n, dtype=np.int64)  # ... of which no longer sampleable (evicted)
        self._gen = torch.Generator()  # on the host: sampling indices never wait for the device
        self._np_dtype = torch.empty(0, dtype=obs_dtype).numpy().dtype  # host-side dtype of the frames
        self._numpy_writes = self.device.type == "cpu"  # see _put
        self._host_views = {}
        if self._numpy_writes:
            for name in ("_frames", "_actions", "_rewards", "_flags", "_tasks"):
                store = getattr(self, name)
                self._host_views[name] = store.view(-1, *store.shape[2:]).numpy()
        self._gen.manual_seed(self.seed)

    # ------------------------------------------------------------------ writing

    def _h2d(self, x: Any) -> torch.Tensor:
        return host_to_device(torch.as_tensor(x), self.device)

    @staticmethod
    def _host_array(x: Any, dtype: np.dtype) -> np.ndarray:
        """``x`` as a host numpy array of ``dtype`` (a device tensor is copied back: rare, e.g. a user's loop)."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        return np.asarray(x, dtype=dtype)

    def _obs_frames(self, x: Any, name: str) -> np.ndarray:
        """Observations as a host array ``(num_envs, stack, *frame)``; only the frames ``add``
        stores (one per env and step) are copied to the device."""
        shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
        if shape != (self.num_envs, *self.obs_shape):
            raise ValueError(f"ReplayBuffer.add: {name} must have shape {(self.num_envs, *self.obs_shape)}, "
                             f"got {shape}")
        return self._host_array(x, self._np_dtype).reshape(self.num_envs, self.stack, *self.frame_shape)

    def _put(self, name: str, flat: np.ndarray, values: np.ndarray | int) -> None:
        """``storage[name].view(-1, ...)[flat] = values``. On CPU through a numpy view of the same
        memory (about 1 us; a torch indexing op costs ~10 us, which dominated a MinAtar step),
        elsewhere with ``index_copy_`` / ``index_fill_`` from pinned host memory."""
        if self._numpy_writes:
            self._host_views[name][flat] = values
            return
        store = getattr(self, name)
        rows = store.view(-1, *store.shape[2:])
        if isinstance(values, int):
            rows.index_fill_(0, self._h2d(flat), values)
        else:
            rows.index_copy_(0, self._h2d(flat), self._h2d(values))

    def add(self, obs, actions, rewards, next_obs, terminated, truncated, valid, task: int = 0) -> None:
        """Store one vector-env step (leading dim ``num_envs`` everywhere); see the module doc.

        ``task``: the task index of the step's transitions (0..255), returned as ``task_ids``.
        """
        n, length, s = self.num_envs, self.lane, self.stack
        if not 0 <= int(task) <= 255:
            raise ValueError(f"ReplayBuffer.add: task must be in [0, 255] (stored as uint8), got {task}")
        valid_h = _host_bool(valid, n, "valid")
        term_h = _host_bool(terminated, n, "terminated")
        trunc_h = _host_bool(truncated, n, "truncated")

        obs_f = self._obs_frames(obs, "obs")  # validate everything before mutating anything
        next_f = self._obs_frames(next_obs, "next_obs")
        act = self._host_array(actions, np.int32).reshape(-1)
        rew = self._host_array(rewards, np.float32).reshape(-1)
        if act.shape[0] != n or rew.shape[0] != n:
            raise ValueError(f"ReplayBuffer.add: actions and rewards must have {n} entries (one per env)")

        # an invalid step inside an open episode closes it (bootstrap from its last next_obs)
        cut = ~valid_h & self._open
        if cut.any():
            self._close(np.flatnonzero(cut))
        lanes = np.flatnonzero(valid_h)
        if lanes.size == 0:
            return

        new_ep = ~self._open[lanes]
        w0 = self._written[lanes]
        w1 = w0 + np.where(new_ep, s + 1, 1)

        # __len__ bookkeeping, BEFORE any write: the logical slots that fall below the lane's
        # sampleable boundary (oldest live slot + stack - 1) stop counting. Their flags are
        # final and not yet overwritten because lane >= 2 * stack + 2.
        b_old = np.maximum(w0 - length, 0) + s - 1
        b_new = np.maximum(w1 - length, 0) + s - 1
        if (b_new > b_old).any():
            for k in range(s + 1):
                b = b_old + k
                m = b < b_new
                if m.any():
                    lm = lanes[m]
                    self._starts_below[lm] += (self._flags_host[lm, b[m] % length] & _START) != 0

        # all writes go through flat slot ids (lane * self.lane + position)
        cursor = w0 % length
        if new_ep.any():
            ne = lanes[new_ep]
            pos = (cursor[new_ep][:, None] + np.arange(s)) % length  # (k, stack): padding + start frame
            flat = (ne[:, None] * length + pos).reshape(-1)
            self._put("_frames", flat, obs_f[ne].reshape(-1, *self.frame_shape))
            self._put("_flags", flat, 0)
            self._flags_host[ne[:, None], pos] = 0
        start = np.where(new_ep, cursor + s - 1, cursor - 1) % length
        nxt = (start + 1) % length
        start_flat, nxt_flat = lanes * length + start, lanes * length + nxt
        self._put("_frames", nxt_flat, next_f[lanes, -1])
        self._put("_flags", nxt_flat, 0)
        self._flags_host[lanes, nxt] = 0

        te, tr = term_h[lanes], trunc_h[lanes]
        done = te | tr
        fl = (_START + _TERM * te + _END * done + _TRUNC * (tr & ~te)).astype(np.uint8)
        self._put("_flags", start_flat, fl)
        self._flags_host[lanes, start] = fl
        self._put("_actions", start_flat, act[lanes])
        self._put("_rewards", start_flat, rew[lanes])
        self._put("_tasks", start_flat, int(task))

        self._written[lanes] = w1
        self._starts_total[lanes] += 1
        self._last_start[lanes] = start
        self._open[lanes] = ~done

    def _close(self, lanes: np.ndarray) -> None:
        slots = self._last_start[lanes]
        self._flags_host[lanes, slots] |= _END
        self._put("_flags", lanes * self.lane + slots, self._flags_host[lanes, slots])
        self._open[lanes] = False

    def end_episodes(self, mask=None) -> None:
        """Close the open episode of the lanes in ``mask`` (all lanes if None).

        Call it when the envs were reset outside the normal step loop (e.g. between tasks),
        so that the next ``add`` starts a new episode instead of stacking across the reset.
        The closed episode's last transition bootstraps from its stored ``next_obs``.
        """
        m = np.ones(self.num_envs, dtype=bool) if mask is None else _host_bool(mask, self.num_envs, "mask")
        lanes = np.flatnonzero(m & self._open)
        if lanes.size:
            self._close(lanes)

    # ------------------------------------------------------------------ reading
    # The bookkeeping of a draw (slot arithmetic, validity) runs in numpy on the host: a batch of
    # 32 costs a few dozen small array ops, each ~1 us in numpy against ~10 us as a torch op.

    def __len__(self) -> int:
        """Transitions currently sampleable with ``n_step=1``."""
        return int((self._starts_total - self._starts_below).sum())

    def _lane_state(self) -> tuple[np.ndarray, np.ndarray]:
        cursor = self._written % self.lane
        oldest_age = self.lane - np.minimum(self._written, self.lane)
        return cursor, oldest_age

    def _window(self, idx: np.ndarray, n_step: int, lane_state=None):
        """Validity and window facts of the transitions starting at flat slots ``idx`` (numpy, host)."""
        length, s = self.lane, self.stack
        cursor, oldest_age = self._lane_state() if lane_state is None else lane_state
        env = idx // length
        p = idx - env * length
        age = (p - cursor[env]) % length  # 0 = oldest physical slot, lane-1 = newest
        slots = (p[:, None] + np.arange(n_step)) % length
        fl = self._flags_host[env[:, None], slots]
        is_start = (fl & _START) != 0
        is_end = ((fl & _END) != 0).astype(np.int64)
        included = (np.cumsum(is_end, axis=1) - is_end) == 0  # no episode end strictly before k
        m = included.sum(axis=1)
        ok = (
            (is_start | ~included).all(axis=1)
            & (age - (s - 1) >= oldest_age[env])
            & (age + m <= length - 1)  # implied by the START rule above; kept as a guard
        )
        return ok, env, p, fl, included, m

    def valid_indices(self, n_step: int = 1) -> torch.Tensor:
        """All flat slot ids whose transition is sampleable with ``n_step`` (exhaustive, O(capacity))."""
        return torch.from_numpy(self._valid_host(n_step)).to(self.device)

    def _valid_host(self, n_step: int) -> np.ndarray:
        self._check_n(n_step)
        idx = np.arange(self.capacity)
        return idx[self._window(idx, n_step)[0]]

    def _check_n(self, n_step: int) -> None:
        if n_step < 1 or n_step > self.lane - self.stack - 1:
            raise ValueError(f"ReplayBuffer: n_step must be in [1, {self.lane - self.stack - 1}], got {n_step}")

    def get(self, indices: torch.Tensor, n_step: int = 1, gamma: float = 0.99) -> dict[str, torch.Tensor]:
        """The batch for given flat slot ids (as returned in ``sample()['indices']``).

        Raises ValueError if one of them is not sampleable with this ``n_step``.
        """
        self._check_n(n_step)
        idx = torch.as_tensor(indices).to("cpu", torch.int64).reshape(-1).numpy()
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.capacity):
            raise ValueError(f"ReplayBuffer.get: indices must lie in [0, {self.capacity})")
        ok, env, p, fl, included, m = self._window(idx, n_step)
        if not bool(ok.all()):
            raise ValueError("ReplayBuffer.get: some indices are not sampleable transitions")
        return self._assemble(idx, env, p, fl, included, m, n_step, gamma)

    def _assemble(self, idx, env, p, fl, included, m, n_step: int, gamma: float) -> dict[str, torch.Tensor]:
        # slot arithmetic on the host; one int and one float copy to the device, where the gathers run
        length, s = self.lane, self.stack
        b = idx.shape[0]
        base = (env * length)[:, None]
        back = np.arange(-(s - 1), 1)
        obs_slots = base + (p[:, None] + back) % length
        nxt_slots = base + ((p + m)[:, None] + back) % length
        ks = np.arange(n_step)
        r_slots = base + (p[:, None] + ks) % length
        pows = np.power(np.float64(gamma), ks).astype(np.float32)
        r_weights = pows * included  # gamma^k inside the window, 0 after an episode end
        last_fl = fl[np.arange(b), m - 1]
        terminated = ((last_fl & _TERM) != 0).astype(np.float32)
        discounts = np.power(np.float64(gamma), m).astype(np.float32) * (1.0 - terminated)
        if self._numpy_writes:
            return self._assemble_host(idx, obs_slots, nxt_slots, r_slots, r_weights, discounts)
        ints = host_to_device(torch.from_numpy(np.concatenate(
            [idx, obs_slots.reshape(-1), nxt_slots.reshape(-1), r_slots.reshape(-1)])), self.device)
        floats = host_to_device(torch.from_numpy(np.concatenate(
            [r_weights.reshape(-1), discounts]).astype(np.float32)), self.device)
        idx, obs_slots, nxt_slots, r_slots = ints.split([b, b * s, b * s, b * n_step])
        r_weights, discounts = floats.split([b * n_step, b])
        frames = self._frames.view(self.capacity, *self.frame_shape)
        rew = self._rewards.view(-1).index_select(0, r_slots).view(b, n_step)
        return {
            "obs": frames.index_select(0, obs_slots).view(b, *self.obs_shape),
            "actions": self._actions.view(-1).index_select(0, idx).to(torch.int64),
            "returns": (rew * r_weights.view(b, n_step)).sum(dim=1),
            "next_obs": frames.index_select(0, nxt_slots).view(b, *self.obs_shape),
            "discounts": discounts,
            "indices": idx,
            "task_ids": self._tasks.view(-1).index_select(0, idx).to(torch.int64),
        }

    def _assemble_host(self, idx, obs_slots, nxt_slots, r_slots, r_weights, discounts) -> dict[str, torch.Tensor]:
        """:meth:`_assemble`'s gathers on CPU storage, through its numpy views (a numpy gather of a
        batch costs ~2 us, a torch ``index_select`` ~10 us); the same values, the returns summed
        by the same torch reduction."""
        v, b = self._host_views, idx.shape[0]
        frames = v["_frames"]
        rewards = v["_rewards"][r_slots] * r_weights.astype(np.float32)
        return {
            "obs": torch.from_numpy(frames[obs_slots.reshape(-1)].reshape(b, *self.obs_shape)),
            "actions": torch.from_numpy(v["_actions"][idx].astype(np.int64)),
            "returns": torch.from_numpy(rewards).sum(dim=1),
            "next_obs": torch.from_numpy(frames[nxt_slots.reshape(-1)].reshape(b, *self.obs_shape)),
            "discounts": torch.from_numpy(discounts.astype(np.float32)),
            "indices": torch.from_numpy(idx.astype(np.int64)),
            "task_ids": torch.from_numpy(v["_tasks"][idx].astype(np.int64)),
        }

    def sample(self, batch_size: int, n_step: int = 1, gamma: float = 0.99) -> dict[str, torch.Tensor]:
        """Uniform i.i.d. batch (with replacement) over transitions whose n-step window is available."""
        self._check_n(n_step)
        if batch_size < 1:
            raise ValueError(f"ReplayBuffer.sample: batch_size must be >= 1, got {batch_size}")
        n1 = len(self)
        if n1 == 0:
            raise ValueError("ReplayBuffer.sample: the buffer holds no sampleable transition yet")
        lane_state = self._lane_state()
        # Candidates are uniform over the slots written so far (a lane fills positions 0, 1, ...
        # before it wraps; every sampleable transition starts in one), so a round of about
        # 1.25 * batch_size candidates usually suffices at any fill level.
        live = np.minimum(self._written, self.lane)
        ends = np.cumsum(live)
        per_round = int(min(max(2 * batch_size, np.ceil(1.25 * batch_size * int(ends[-1]) / n1) + 16), 1 << 22))
        parts, got, rounds = [], 0, 0
        while got < batch_size:
            u = torch.randint(int(ends[-1]), (per_round,), generator=self._gen).numpy()
            env = np.searchsorted(ends, u, side="right")
            cand = env * self.lane + u - (ends - live)[env]
            ok, *facts = self._window(cand, n_step, lane_state)
            parts.append([cand[ok], *(f[ok] for f in facts)])
            got += int(ok.sum())
            rounds += 1
            if got == 0 and rounds >= 32:
                # very few (or no) transitions have a full n-step window: draw from the exact set
                pool = self._valid_host(n_step)
                if pool.size == 0:
                    raise ValueError(
                        f"ReplayBuffer.sample: no stored transition has an available {n_step}-step window yet"
                    )
                idx = pool[torch.randint(pool.size, (batch_size,), generator=self._gen).numpy()]
                return self._assemble(idx, *self._window(idx, n_step, lane_state)[1:], n_step, gamma)
        if len(parts) == 1:
            idx, env, p, fl, included, m = (c[:batch_size] for c in parts[0])
        else:
            idx, env, p, fl, included, m = (np.concatenate(c)[:batch_size] for c in zip(*parts))
        return self._assemble(idx, env, p, fl, included, m, n_step, gamma)

    def sample_states(self, batch_size: int, task: int | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor | None:
        """``batch_size`` observations (the ``obs`` of uniform 1-step transitions, with replacement)
        of the transitions stored with task index ``task`` (all when None), drawn with
        ``generator`` (default: the buffer's own). None when no such transition is stored.

        Exhaustive over the buffer (O(capacity), one copy of the task column to the host): for
        occasional batches (ReDo's scoring batch, metric probes), not per update.
        """
        if batch_size < 1:
            raise ValueError(f"ReplayBuffer.sample_states: batch_size must be >= 1, got {batch_size}")
        if len(self) == 0:
            return None
        pool = self._valid_host(1)
        if task is not None:
            pool = pool[self._tasks.view(-1).cpu().numpy()[pool] == int(task)]
        if pool.size == 0:
            return None
        gen = self._gen if generator is None else generator
        idx = pool[torch.randint(pool.size, (batch_size,), generator=gen).numpy()]
        return self._assemble(idx, *self._window(idx, 1)[1:], 1, 0.99)["obs"]

    def count_task(self, task: int) -> int:
        """Sampleable 1-step transitions stored with task index ``task`` (O(capacity))."""
        if len(self) == 0:
            return 0
        pool = self._valid_host(1)
        return int((self._tasks.view(-1).cpu().numpy()[pool] == int(task)).sum())

    # ------------------------------------------------------------------ accounting

    def nbytes(self) -> int:
        """Bytes held by all storage: device tensors plus the host-side bookkeeping arrays."""
        dev = sum(t.numel() * t.element_size()
                  for t in (self._frames, self._actions, self._rewards, self._flags, self._tasks))
        host = sum(
            a.nbytes
            for a in (
                self._flags_host,
                self._written,
                self._open,
                self._last_start,
                self._starts_total,
                self._starts_below,
            )
        )
        return int(dev + host)

    def bytes_per_transition(self) -> float:
        return self.nbytes() / self.capacity

    # ------------------------------------------------------------------ checkpointing

    def _config(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "num_envs": self.num_envs,
            "obs_shape": list(self.obs_shape),
            "stack": self.stack,
            "obs_dtype": str(self.obs_dtype),
        }

    def state_dict(self) -> dict:
        """Everything needed to resume, sampling generator included.

        Once the buffer has wrapped, the storage tensors are returned by reference (no copy of a
        multi-GiB buffer): save it (``torch.save``) before the next ``add``, or deep-copy it.
        """
        used = int(min(self._written.max(initial=0), self.lane))

        def filled(t: torch.Tensor) -> torch.Tensor:
            # Only the slots ever written: a short run saves MBs, not the GBs of an empty 1M buffer.
            # (A slice is cloned because torch.save of a view would write the whole storage.)
            return t if used == self.lane else t[:, :used].clone()

        return {
            "version": _STATE_VERSION,
            "config": self._config(),
            "frames": filled(self._frames),
            "actions": filled(self._actions),
            "rewards": filled(self._rewards),
            "flags": filled(self._flags),
            "tasks": filled(self._tasks),
            "written": torch.from_numpy(self._written.copy()),
            "open": torch.from_numpy(self._open.copy()),
            "last_start": torch.from_numpy(self._last_start.copy()),
            "starts_total": torch.from_numpy(self._starts_total.copy()),
            "starts_below": torch.from_numpy(self._starts_below.copy()),
            "rng_state": self._gen.get_state(),
            "rng_device": self._gen.device.type,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"ReplayBuffer.load_state_dict: unknown state version {state.get('version')!r}")
        if state["config"] != self._config():
            raise ValueError(
                f"ReplayBuffer.load_state_dict: saved buffer {state['config']} does not match this one {self._config()}"
            )
        used = state["flags"].shape[1]
        self._flags.zero_()
        self._frames[:, :used].copy_(state["frames"])
        self._actions[:, :used].copy_(state["actions"])
        self._rewards[:, :used].copy_(state["rewards"])
        self._flags[:, :used].copy_(state["flags"])
        self._tasks.zero_()
        if "tasks" in state:  # absent in checkpoints written before the task column: all task 0
            self._tasks[:, :used].copy_(state["tasks"])
        self._flags_host = self._flags.detach().cpu().numpy().astype(np.uint8, copy=True)
        self._written = state["written"].cpu().numpy().astype(np.int64, copy=True)
        self._open = state["open"].cpu().numpy().astype(bool, copy=True)
        self._last_start = state["last_start"].cpu().numpy().astype(np.int64, copy=True)
        self._starts_total = state["starts_total"].cpu().numpy().astype(np.int64, copy=True)
        self._starts_below = state["starts_below"].cpu().numpy().astype(np.int64, copy=True)
        if state.get("rng_device") == self._gen.device.type:
            self._gen.set_state(state["rng_state"].cpu())
        else:
            warnings.warn(
                f"ReplayBuffer.load_state_dict: sampling generator saved on {state.get('rng_device')!r}, "
                f"loaded on {self._gen.device.type!r}; re-seeding it, so samples will differ from the original run",
                stacklevel=2,
            )
            self._gen.manual_seed(self.seed + int(self._starts_total.sum()))
