"""Progress while a run trains (crl/logging.py): a tqdm bar on a terminal, plain lines when stderr
is not one (nohup, Slurm, CI), both moving with the learner's train/* scalars every --log-every
steps, not only at evaluations and checkpoints; --no-progress turns both off."""
from __future__ import annotations

import os
import pty
import fcntl
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

from conftest import gym_args
from crl.cli import main
from crl.config import make_config
from crl.logging import RunLogger, plain_line_interval

REPO = Path(__file__).resolve().parents[1]
# One chunk: the runner evaluates and checkpoints only at the end, so any progress shown before
# the end comes from the learner's train/* logging.
RUN = ("--steps", "900", "--learning-starts", "100", "--eval-every", "900", "--checkpoint-every", "900",
       "--eval-episodes", "2", "--eval-max-steps", "200", "--log-every", "100", "--seed", "2")
LINE = re.compile(r"step (\d+)/900 \((\d+)%\)  \d+ steps/s(  return \d+\.\d)?")


def _step_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("step ")]


def test_plain_lines_every_log_every_when_stderr_is_not_a_terminal(tmp_path, capsys):
    assert main(gym_args(tmp_path, *RUN, "--progress", "--name", "p")) == 0
    err = capsys.readouterr().err  # pytest's capture: not a terminal
    lines = _step_lines(err)
    assert all(LINE.fullmatch(ln) for ln in lines), lines
    assert [int(LINE.fullmatch(ln)[1]) for ln in lines] == list(range(100, 901, 100))
    assert [int(LINE.fullmatch(ln)[2]) for ln in lines] == [round(100 * s / 900) for s in range(100, 901, 100)]
    assert LINE.fullmatch(lines[-1])[3], "CartPole episodes have ended by step 900: the line shows their return"
    assert "\r" not in err and "|" not in err  # no bar drawn into a log file


def test_no_progress_prints_nothing(tmp_path, capsys):
    assert main(gym_args(tmp_path, *RUN, "--name", "q")) == 0  # gym_args passes --no-progress
    assert _step_lines(capsys.readouterr().err) == []


def test_plain_lines_capped_for_a_tiny_log_every_and_final_step_shown(tmp_path, capsys):
    """--log-every 1 over 5,000 steps: a line every 5 steps (1,000 lines), not 5,000; a run ending
    between two lines prints where it ended; a resumed run goes on from its step."""
    assert plain_line_interval(1, 5000) == 5 and plain_line_interval(500, 100_000) == 500
    logger = RunLogger(tmp_path / "a", make_config("gym", log_every=1), total_steps=5000)
    for step in range(1, 5001):
        logger.progress(step)
    logger.close()
    steps = [int(ln.split()[1].split("/")[0]) for ln in _step_lines(capsys.readouterr().err)]
    assert steps == list(range(5, 5001, 5))

    logger = RunLogger(tmp_path / "b", make_config("gym", log_every=100), total_steps=950, start_step=300)
    for step in (350, 400, 480, 950):
        logger.progress(step)
    logger.close()
    assert [ln.split()[1] for ln in _step_lines(capsys.readouterr().err)] == ["400/950", "950/950"]


def _stderr_on_a_terminal(argv: list[str]) -> tuple[int, str]:
    """Run ``argv`` with stderr on a pseudo-terminal; return its exit code and what it drew there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 x 120, as a terminal window
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_bar_moves_between_evaluations_on_a_terminal(tmp_path):
    code, drawn = _stderr_on_a_terminal([sys.executable, "-m", "crl.cli", *gym_args(tmp_path, *RUN, "--progress")])
    assert code == 0, drawn
    shown = [int(n) for n in re.findall(r"\| *(\d+)/900 \[", drawn)]  # tqdm: " 33%|###   | 300/900 [00:01<..."
    assert shown and shown[-1] == 900, drawn
    between = sorted({n for n in shown if 0 < n < 900})
    assert between, f"the bar showed only {sorted(set(shown))}: it did not move before the run's only chunk ended"
    assert all(n % 100 == 0 for n in between), between  # it moves at the learner's --log-every steps
    assert not _step_lines(drawn.replace("\r", "\n")), "plain lines are for stderr that is not a terminal"


def _pty_stream(columns: int):
    """(stream writing to a new pseudo-terminal of ``columns`` columns, fd to read what it shows)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40 if columns else 0, columns, 0, 0))
    return os.fdopen(slave, "w"), master


def _read_all(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks).decode(errors="replace")


def test_terminal_without_width_gets_plain_lines(tmp_path, monkeypatch):
    """A pseudo-terminal of 0 columns (batch systems, containers): tqdm would draw nothing there."""
    for columns in (0, 120):
        stream, master = _pty_stream(columns)
        monkeypatch.setattr(sys, "stderr", stream)
        logger = RunLogger(tmp_path / str(columns), make_config("gym", log_every=100), total_steps=300)
        for step in (100, 200, 300):
            logger.progress(step)
        logger.close()
        stream.flush()
        shown = _read_all(master).replace("\r", "\n")
        stream.close()
        os.close(master)
        if columns == 0:
            assert [ln.split()[1] for ln in _step_lines(shown)] == ["100/300", "200/300", "300/300"], shown
        else:
            assert not _step_lines(shown) and "300/300 [" in shown, shown
