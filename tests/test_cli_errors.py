"""Bad input: one clear line on stderr, exit code 2, nothing written or overwritten."""
from __future__ import annotations

import pytest

from crl.cli import main
from conftest import gym_args


def _assert_one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("argv, needles", [
    (["atari", "--agent", "dqn-hlgaus"], ["--agent", "unknown agent 'dqn-hlgaus'", "accepted: dqn-hlgauss"]),
    (["atari", "--norm", "layernrom"], ["--norm", "accepted: layernorm"]),
    (["atari", "--torso", "resnet9000"], ["--torso", "accepted:"]),
    (["atari", "--game", "breakuot"], ["--game", "breakout"]),
    (["atari", "--steps", "0"], ["--steps", "must be > 0"]),
    (["atari", "--steps", "-5"], ["--steps", "must be > 0"]),
    (["atari", "--steps", "ten"], ["--steps", "expected int"]),
    (["atari", "--device", "tpu"], ["--device", "auto, cpu, cuda"]),
    (["atari", "--optimizer", "adamm"], ["--optimizer", "accepted: adam"]),
    (["atari", "--intervention", "nap,foo"], ["--intervention", "unknown intervention 'foo'"]),
    (["gym", "--env-id", "CartPole-v9"], ["--env-id", "CartPole-v1"]),
    (["gym", "--torso", "nature"], ["--torso", "image observations"]),
    (["gym", "--moe", "softmoe"], ["--moe", "conv torso"]),
    (["atari", "--eval-eps", "2"], ["--eval-eps", "[0, 1]"]),
    (["atari", "--bogus-flag", "1"], ["unrecognized arguments: --bogus-flag"]),
    (["nosuchcommand"], ["unknown command 'nosuchcommand'", "accepted: atari"]),
    (["gymm"], ["did you mean 'gym'?"]),
    (["atari", "--norm", "NAP"], ["--norm", "did you mean 'nap'?"]),
    (["atari", "--lr-schedule", "Cosine"], ["--lr-schedule", "did you mean 'cosine'?"]),
    (["atari", "--redo-tua", "0.2"], ["unrecognized arguments: --redo-tua", "did you mean '--redo-tau'?"]),
    (["atari", "--redo-tau", "0.2"], ["--redo-tau", "intervention redo", "does not use", "--intervention redo"]),
    (["gym", "--game", "pong"], ["--game", "scenario atari", "does not use"]),
    (["gym", "--strategy", "der++"], ["--strategy", "agent classifier", "does not use"]),
    (["minatar", "--torso", "nature", "--steps", "100"], ["--torso", "too small"]),
])
def test_bad_input_is_one_line_exit_2(argv, needles, capsys, tmp_path):
    code = main([*argv, "--run-dir", str(tmp_path / "runs")] if argv[0] in ("atari", "gym", "minatar") else argv)
    assert code == 2
    _assert_one_line_error(capsys, *needles)
    assert not (tmp_path / "runs").exists()


def test_closest_match_first(capsys, tmp_path):
    assert main(["atari", "--agent", "dqn-c5", "--run-dir", str(tmp_path)]) == 2
    line = _assert_one_line_error(capsys)
    assert line.split("accepted: ")[1].startswith("dqn-c51")


def test_resume_missing_directory(capsys, tmp_path):
    assert main(["gym", "--resume", str(tmp_path / "nope")]) == 2
    _assert_one_line_error(capsys, "--resume", "not a run directory")


def test_resume_corrupt_directory_changes_nothing(capsys, run_root):
    assert main(gym_args(run_root, "--steps", "600", "--eval-every", "300", "--checkpoint-every", "300",
                         "--learning-starts", "100", "--eval-episodes", "2", "--name", "a")) == 0
    run_dir = next(run_root.glob("*/*/a"))
    for ckpt in (run_dir / "checkpoints").glob("*.pt"):
        ckpt.write_bytes(b"garbage")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["gym", "--resume", str(run_dir)]) == 2
    _assert_one_line_error(capsys, "--resume", "corrupt")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_existing_run_directory_is_not_overwritten(capsys, run_root):
    args = gym_args(run_root, "--steps", "200", "--eval-every", "200", "--learning-starts", "50",
                    "--eval-episodes", "1", "--name", "same")
    assert main(args) == 0
    run_dir = next(run_root.glob("*/*/same"))
    before = (run_dir / "config.yaml").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    _assert_one_line_error(capsys, "already holds a run", "--resume")
    assert (run_dir / "config.yaml").read_bytes() == before


def test_help_catalogue_lists_every_component(capsys):
    assert main(["help"]) == 0
    out = capsys.readouterr().out
    for name in ("dqn-hlgauss", "dqn-c51", "nature", "impala", "mlp", "layernorm", "nap", "hlgauss", "redo",
                 "meta-rescale", "split-cifar10", "normuon"):
        assert f"  {name} " in out, name


def _flags(text: str) -> set[str]:
    return {tok.rstrip(",") for tok in text.split() if tok.startswith("--")}


def test_gym_help_shows_common_and_in_play_options_only(capsys):
    assert main(["gym", "--help"]) == 0
    shown = _flags(capsys.readouterr().out)
    assert {"--steps", "--lr", "--seed", "--env-id", "--gamma", "--sigma-ratio", "--mlp-hidden"} <= shown
    # supervised-only, meta-rescale, Atari-only and other components' options are not listed
    assert not shown & {"--strategy", "--epochs", "--der-alpha", "--meta-lr", "--meta-keep", "--game", "--sticky-actions",
                        "--redo-tau", "--impala-width", "--data-dir", "--adab2n-lambda", "--num-experts"}


def test_help_follows_the_components_on_the_command_line(capsys):
    assert main(["gym", "--intervention", "redo", "--torso", "impala", "--agent", "dqn", "--help"]) == 0
    shown = _flags(capsys.readouterr().out)
    assert {"--redo-tau", "--redo-every", "--impala-width"} <= shown
    assert not shown & {"--mlp-hidden", "--sigma-ratio", "--num-bins"}  # scalar head: no support options


def test_help_name_lists_one_component(capsys):
    assert main(["help", "meta-rescale"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("intervention meta-rescale:")
    assert {"--meta-lr", "--meta-keep", "--meta-val", "--meta-features"} <= _flags(out)
    assert "--redo-tau" not in out and "--steps" not in out


def test_help_unknown_name_suggests_the_right_case(capsys):
    assert main(["help", "Meta-Rescale"]) == 2
    _assert_one_line_error(capsys, "unknown component 'Meta-Rescale'", "did you mean 'meta-rescale'?")


def test_top_level_help_does_not_import_torch():
    """`crl --help` answers without the heavy imports (the 1-second target is measured, not timed here)."""
    import subprocess
    import sys

    code = "import sys; from crl.cli import main; main(['--help']); print(sorted(m for m in ('torch', 'gymnasium') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "commands:" in out and out.strip().endswith("[]")


def test_a_closed_pipe_ends_quietly():
    """`crl help | head -1`: the reader leaves early; no BrokenPipeError traceback on stderr."""
    import subprocess
    import sys

    cmd = f"{sys.executable} -m crl.cli help | head -1"
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() and done.stderr == ""
