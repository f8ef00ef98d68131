"""Runs that survive signals and bad numbers.

Two pieces the runner (``crl/runner.py``) and the learners use:

:func:`stop_on_signals`
    While a run is in :meth:`Runner.run`, SIGINT and SIGTERM set ``run.stop_requested``
    instead of killing the process. Learners check that flag between env steps/updates and
    return early; the runner then writes a final checkpoint, flushes the event file and
    writes ``summary.json`` (``stopped_early: true``, ``stop_signal: "SIGTERM"``). The CLI
    exits with ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM), the shell
    convention for "ended by a signal", and ``--resume RUN_DIR`` continues bit-for-bit.
    A second signal of either kind stops at once (``KeyboardInterrupt``, no checkpoint).
    Handlers are installed only in the main thread (elsewhere, e.g. inside a Ray worker
    thread, Python cannot install them) and the previous handlers are restored afterwards.

:func:`check_finite`
    Called by a learner after ``loss.backward()`` and before gradient clipping and
    ``optimizer.step()``. One host sync tells whether the loss, the total gradient norm
    (:func:`grad_norms`, which the clip, :func:`clip_grads`, reuses) and the floating-point
    buffers are finite. Parameters are not reduced: a non-finite parameter (left by the
    previous optimizer step or by a hook after it, e.g. an intervention) makes this update's
    forward and loss non-finite, and the diagnosis then looks at the parameters first. When
    all is finite the parameters are copied (the last good state); when not,
    :class:`NumericalError` names the step and the layer, after copying the last good
    parameters back if a parameter was the culprit. Checking before the step means a NaN in
    the loss or the gradients never reaches the weights, so the runner can save the state in
    memory as the last good state. The runner also checks every parameter and buffer before
    each regular checkpoint (:func:`check_parameters`).

Exit codes of ``crl`` (see ``crl/cli.py``): 0 done, 1 the run stopped on a non-finite
number (:class:`NumericalError`), 2 bad input (nothing ran), 128+N stopped by signal N.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import weakref
from typing import Any, Iterator

import torch

from crl.nn import module_walk

EXIT_NUMERICAL = 1

_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


class NumericalError(RuntimeError):
    """A NaN or inf in the loss, a gradient or a parameter; the run stops (exit code 1).

    ``what`` is ``loss``, ``gradient`` or ``parameter``; ``where`` the parameter's name
    (``network.named_parameters()``), ``step`` the learner's step. The runner sets
    ``checkpoint`` to the file holding the last good state before the CLI reports it.
    """

    def __init__(self, what: str, step: int | None, where: str | None = None, value: str = "nan",
                 others: int = 0, restored_from: int | None = None):
        super().__init__(what, step, where)
        self.what, self.step, self.where, self.value = what, step, where, value
        self.others, self.restored_from = others, restored_from
        self.checkpoint: str | None = None
        self.note: str | None = None

    def __str__(self) -> str:
        where = f" in layer '{self.where}'" if self.where else ""
        more = f" (and {self.others} more tensor{'s' if self.others > 1 else ''})" if self.others else ""
        step = f" at step {self.step}" if self.step is not None else ""
        msg = f"non-finite {self.what} ({self.value}){where}{more}{step}; the run stopped"
        if self.restored_from is not None:
            msg += f"; parameters restored to their last good copy (step {self.restored_from})"
        if self.checkpoint:
            msg += f"; last good state saved in {self.checkpoint}"
        if self.note:
            msg += f"; {self.note}"
        return msg


# ------------------------------------------------------------------------------ NaN / inf guard


class _Snapshot:
    __slots__ = ("tensors", "step", "checks")

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] | None = None
        self.step: int | None = None
        self.checks = 0


_SNAPSHOTS: "weakref.WeakKeyDictionary[torch.nn.Module, _Snapshot]" = weakref.WeakKeyDictionary()


def _state_tensors(network: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Parameters and floating-point buffers (e.g. BatchNorm statistics), by name."""
    out = [(n, p.detach()) for n, p in network.named_parameters()]
    out += [(n, b) for n, b in network.named_buffers() if b.is_floating_point()]
    return out


def _norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """One scalar per tensor that is non-finite when the tensor holds a NaN or inf.

    ``torch._foreach_norm`` (what ``torch.nn.utils.clip_grad_norm_`` uses) launches few
    kernels; a norm can overflow to inf for huge finite values, so a hit is confirmed
    element-wise before anything is reported.
    """
    if not tensors:
        return []
    foreach = getattr(torch, "_foreach_norm", None)
    if foreach is not None:
        try:
            return list(foreach(tensors))
        except (RuntimeError, TypeError):
            pass
    return [torch.linalg.vector_norm(t.float()) for t in tensors]


def _bad(named: list[tuple[str, torch.Tensor]]) -> list[tuple[str, str]]:
    """(name, 'nan'|'inf') of each tensor with a non-finite element."""
    out = []
    for name, t in named:
        if not bool(torch.isfinite(t).all()):
            out.append((name, "nan" if bool(torch.isnan(t).any()) else "inf"))
    return out


def _copy(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    with torch.no_grad():
        copy = getattr(torch, "_foreach_copy_", None)
        if copy is not None:
            copy(dst, src)
        else:  # pragma: no cover  (older torch)
            for d, s in zip(dst, src):
                d.copy_(s)


def _step_of(run: Any, step: int | None) -> int | None:
    return step if step is not None else getattr(run, "global_step", None)


def grad_norms(network: torch.nn.Module) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The gradients of ``network``'s parameters and their total L2 norm (None without gradients),
    computed once for both :func:`check_finite` and :func:`clip_grads`."""
    grads = [p.grad for p in module_walk.parameters(network) if p.grad is not None]
    if not grads:
        return grads, None
    return grads, torch.linalg.vector_norm(torch.stack([n.float() for n in _norms(grads)]))


def clip_grads(grads: list[torch.Tensor], total: torch.Tensor | None, max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_``'s rule with the norm already computed: scale every
    gradient by ``min(1, max_norm / (total + 1e-6))`` (always multiplied, as torch does); 0 = off."""
    if max_norm > 0 and grads:
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0).to(grads[0].dtype))


def check_finite(run: Any, loss: torch.Tensor, network: torch.nn.Module, step: int | None = None,
                 total_grad_norm: torch.Tensor | None = None, copy_every: int = 1) -> None:
    """Raise :class:`NumericalError` unless the loss, the gradients, the floating-point buffers
    and (through the loss) the parameters are finite; else copy the parameters (the last good
    state) on every ``copy_every``-th call (``--guard-copy-every``: on CPU the copy of a large
    network costs about as much as the rest of the guard).

    Call after ``loss.backward()`` and before clipping (which would spread one NaN over every
    gradient and hide the layer it came from) and ``optimizer.step()``. ``total_grad_norm``
    is :func:`grad_norms`'s total, computed here if not given. ``step`` (default
    ``run.global_step``) is the step named in the message.
    """
    if total_grad_norm is None:
        total_grad_norm = grad_norms(network)[1]
    total = loss.detach().float().sum()
    buffers = module_walk.float_buffers(network)
    if buffers:
        total = total + torch.stack([n.float() for n in _norms(list(buffers))]).sum()
    if total_grad_norm is not None:
        total = total + total_grad_norm.float()
    step = _step_of(run, step)
    # NaN/inf anywhere makes the sum non-finite; .item() is the one device sync.
    if not math.isfinite(total.item()):
        _diagnose(network, loss, step)
    _keep_last_good(network, step, copy_every)


def _diagnose(network: torch.nn.Module, loss: torch.Tensor, step: int | None) -> None:
    """Name what is non-finite: a parameter or buffer first (restored to the last good copy),
    then the loss, then the gradient nearest the output."""
    _raise_if_bad_state(network, _state_tensors(network), step)
    if not bool(torch.isfinite(loss.detach()).all()):
        raise NumericalError("loss", step, value="nan" if bool(torch.isnan(loss.detach()).any()) else "inf")
    bad = _bad([(n, p.grad) for n, p in network.named_parameters() if p.grad is not None])
    if bad:
        # Backprop runs from the output to the input: the non-finite gradient nearest the
        # output (last in registration order) is where it appeared.
        name, value = bad[-1]
        raise NumericalError("gradient", step, where=name, value=value, others=len(bad) - 1)
    # else a norm (or their sum) overflowed for huge but finite values: not an error.


def _keep_last_good(network: torch.nn.Module, step: int | None, every: int) -> None:
    """Copy parameters and floating-point buffers on every ``every``-th call (the first included)."""
    snap = _SNAPSHOTS.get(network)
    if snap is None:
        snap = _SNAPSHOTS[network] = _Snapshot()
    snap.checks += 1
    if (snap.checks - 1) % max(int(every), 1):
        return
    state = [t for _, t in _state_tensors(network)]
    if snap.tensors is None or len(snap.tensors) != len(state) or any(
            s.shape != t.shape or s.device != t.device or s.dtype != t.dtype for s, t in zip(snap.tensors, state)):
        snap.tensors = [t.clone() for t in state]
    else:
        _copy(snap.tensors, state)
    snap.step = step


def check_parameters(run: Any, network: torch.nn.Module, step: int | None = None) -> None:
    """Raise :class:`NumericalError` (after restoring the last good copy) if a parameter is not finite."""
    state = _state_tensors(network)
    if not state or bool(torch.isfinite(torch.stack([n.float() for n in _norms([t for _, t in state])])).all()):
        return
    _raise_if_bad_state(network, state, _step_of(run, step))


def parameters_finite(network: torch.nn.Module) -> bool:
    return not _bad(_state_tensors(network))


def _raise_if_bad_state(network: torch.nn.Module, state: list[tuple[str, torch.Tensor]], step: int | None) -> None:
    bad = _bad(state)
    if not bad:
        return
    snap = _SNAPSHOTS.get(network)
    restored = None
    if snap is not None and snap.tensors is not None and len(snap.tensors) == len(state):
        _copy([t for _, t in state], snap.tensors)
        restored = snap.step
    name, value = bad[0]
    raise NumericalError("parameter", step, where=name, value=value, others=len(bad) - 1, restored_from=restored)


# ------------------------------------------------------------------------------ signals


@contextlib.contextmanager
def stop_on_signals(run: Any) -> Iterator[None]:
    """SIGINT/SIGTERM -> ``run.stop_requested = True`` and ``run.stop_signal = 'SIGTERM'``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        name = signal.Signals(signum).name
        if run.stop_requested:
            raise KeyboardInterrupt(f"second {name}")
        run.stop_requested = True
        run.stop_signal = name
        # os.write, not print: a handler that prints while the main code is printing raises
        # "reentrant call" on the buffered stderr.
        msg = (f"\ncrl: {name} received: stopping after the current step, writing a final checkpoint "
               f"(send {name} again to stop at once, without one)\n")
        try:
            os.write(2, msg.encode())
        except OSError:
            pass

    previous = {}
    for sig in _SIGNALS:
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not allowed here (embedded interpreter, ...)
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            try:
                signal.signal(sig, old)
            except (ValueError, OSError, TypeError):
                pass


def exit_code_for_signal(name: str | None) -> int:
    """``128 + signal number`` (the shell's convention), 0 without a signal."""
    if not name:
        return 0
    return 128 + int(getattr(signal, name))


__all__ = ["NumericalError", "check_finite", "grad_norms", "clip_grads", "check_parameters", "parameters_finite",
           "stop_on_signals", "exit_code_for_signal", "EXIT_NUMERICAL"]
