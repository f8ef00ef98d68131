"""Fuzz the input layer: >= 200 generated invalid command lines and files, each must give
exit code 2, one ``error:`` line and no traceback, and write no run directory.

Cases come from a seeded generator (so a failure is reproducible; the case label is in the
assertion message): mutations of a valid ``crl gym`` command line (unknown flags, wrong
types, zero/negative/NaN/inf numbers, values outside their range, misspelt registry names
and choices, missing values), YAML files given with ``--config`` (syntax errors, wrong
top-level types, unknown keys, wrong value types and ranges, binary garbage, missing files),
scenario files for ``crl run``, ``--resume`` targets and ``crl sweep`` command lines.
"""
from __future__ import annotations

import dataclasses
import os
import random
import string
import subprocess
import sys
from pathlib import Path

import gymnasium as gym

from crl.cli import main
from crl.options import option_fields
from crl.registry import AGENTS, INTERVENTIONS, NORMS, OPTIMIZERS, TORSOS, load_builtins

REPO = Path(__file__).resolve().parents[1]
SEED = 20240531
N_CASES = 240

VALID = ["gym", "--env-id", "CartPole-v1", "--no-progress", "--metrics-every", "0", "--steps", "200",
         "--learning-starts", "50", "--eval-every", "100", "--eval-episodes", "1", "--eval-max-steps", "50"]
VALID_YAML = {"env_id": "CartPole-v1", "metrics_every": 0, "steps": 200, "learning_starts": 50, "eval_every": 100,
              "eval_episodes": 1, "eval_max_steps": 50, "progress": False}

# The documented ranges (crl/config.py validate): each field -> values outside them.
POSITIVE = ("steps", "eval_every", "eval_episodes", "eval_max_steps", "checkpoint_every", "num_envs", "n_step",
            "batch_size", "buffer_size", "train_freq", "target_update", "num_bins", "num_experts", "expert_hidden",
            "impala_width", "log_every", "max_episode_frames", "cycles", "eval_batch_size", "resnet_width",
            "redo_every", "meta_hidden", "meta_every", "meta_pool")
NON_NEGATIVE = ("seed", "learning_starts", "eps_decay_steps", "lr_warmup", "metrics_every", "weight_decay",
                "max_grad_norm", "n_tasks", "max_train_samples", "replay_size", "replay_batch_size", "epochs",
                "relabel_every", "adab2n_lambda", "adab2n_t0", "der_alpha", "der_beta", "sp_every", "reset_every",
                "l2_init_coef", "meta_inner_lr", "meta_val_size", "meta_warmup", "redo_tau", "sp_shrink",
                "sp_perturb", "adam_eps")
POSITIVE_FLOAT = ("lr", "sigma_ratio", "meta_lr")
UNIT = ("gamma", "sticky_actions", "eps_start", "eps_end", "eval_eps", "label_shuffle_eps", "warm_start_fraction")
REGISTRY_FIELDS = {"agent": AGENTS, "torso": TORSOS, "norm": NORMS, "optimizer": OPTIMIZERS,
                   "intervention": INTERVENTIONS}
load_builtins()
FIELDS = option_fields()


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _out_of_range(rng: random.Random, name: str) -> str:
    kind = type(FIELDS[name].default)
    if name in POSITIVE or name in POSITIVE_FLOAT:
        pool = ["0", "-1", "-1000"]
    elif name in UNIT:
        pool = ["-0.1", "1.5", "2", "-1e-9"]
    else:
        pool = ["-1", "-3"]
    if kind is float:
        pool += ["nan", "inf", "-inf", "NaN", "1e400"]
    if name == "seed":
        pool += [str(2 ** 32), "-5", "99999999999999999999"]
    return rng.choice(pool)


def _wrong_type(rng: random.Random, name: str) -> str:
    kind = type(FIELDS[name].default)
    if kind is int:
        return rng.choice(["ten", "1.5", "2.5e0", "1e-3", "0x1F", "", "1,2", "[1]", "None", "nan", "inf", "1e400",
                           "½", "1_0_", "--1"])
    return rng.choice(["abc", "", "1,5", "0x", "1e", "1.2.3", "[0.1]", "None", "true", "1/2"])


def _misspell(rng: random.Random, name: str, valid: set[str]) -> str:
    for _ in range(50):
        s = name or "x"
        op = rng.choice(["drop", "dup", "swap", "case", "suffix", "prefix", "replace", "random"])
        i = rng.randrange(len(s))
        if op == "drop":
            s = s[:i] + s[i + 1:]
        elif op == "dup":
            s = s[:i] + s[i] + s[i:]
        elif op == "swap" and len(s) > 1:
            i = min(i, len(s) - 2)
            s = s[:i] + s[i + 1] + s[i] + s[i + 2:]
        elif op == "case":
            s = s.upper()
        elif op == "suffix":
            s = s + rng.choice(["2", "-v9", "_", "x"])
        elif op == "prefix":
            s = rng.choice(["my-", "x", "_"]) + s
        elif op == "replace":
            s = s[:i] + rng.choice(string.ascii_lowercase) + s[i + 1:]
        else:
            s = "".join(rng.choice(string.ascii_lowercase + "-") for _ in range(rng.randint(1, 12)))
        if s and s not in valid and s.strip() == s and not s.startswith("-"):
            return s
    return "definitely-not-a-name"


def _flag_mutation(rng: random.Random) -> list[str]:
    """One invalid flag (or flag + value) to append to a valid command line."""
    family = rng.choice(["unknown", "range", "range", "type", "type", "registry", "choice", "env", "bool", "mlp",
                         "missing", "vmin"])
    if family == "unknown":
        word = rng.choice(["--stpes", "--lrr", "--norms", "--seeds", "--env", "--agnet", "--x", "--grid", "--eval"]
                          + ["--" + "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))])
        return [word, rng.choice(["1", "abc", "0.5"])]
    if family == "range":
        name = rng.choice(POSITIVE + NON_NEGATIVE + POSITIVE_FLOAT + UNIT)
        return [f"{_flag(name)}={_out_of_range(rng, name)}"]
    if family == "type":
        name = rng.choice([n for n, f in FIELDS.items() if type(f.default) in (int, float)])
        return [f"{_flag(name)}={_wrong_type(rng, name)}"]
    if family == "registry":
        name = rng.choice(list(REGISTRY_FIELDS))
        reg = REGISTRY_FIELDS[name]
        return [_flag(name), _misspell(rng, rng.choice(reg.names()), set(reg.names()))]
    if family == "choice":
        name = rng.choice([n for n, f in FIELDS.items() if f.metadata.get("choices")])
        choices = set(FIELDS[name].metadata["choices"])
        return [_flag(name), _misspell(rng, rng.choice(sorted(choices)), choices)]
    if family == "env":
        bad = rng.choice([_misspell(rng, "CartPole-v1", set(gym.registry)), "Pendulum-v1",
                          "MountainCarContinuous-v0", "NoSuchEnv-v0", "CartPole", "ALE/NoGame-v5"])
        return ["--env-id", bad]
    if family == "bool":
        return [rng.choice(["--progress=yes", "--no-progress=1", "--double-dqn=maybe", "--clip-rewards=0"])]
    if family == "mlp":
        return ["--mlp-hidden", rng.choice(["0", "-1,2", "a,b", "", "1.5", ",", "64,-64", "nan"])]
    if family == "vmin":
        return ["--v-min", "10", "--v-max", rng.choice(["10", "-10", "0"])]
    return [rng.choice(["--steps", "--lr", "--norm", "--env-id", "--config"])]  # missing value: must be last


def _yaml_case(rng: random.Random, path: Path) -> None:
    family = rng.choice(["syntax", "toplevel", "unknown", "type", "range", "range", "garbage", "name"])
    body = dict(VALID_YAML)
    if family == "syntax":
        text = rng.choice(["steps: [1, 2", "a: b: c", "\tsteps: 1", "steps: 'x", "- a\nb: c", "{", "steps: *anchor",
                           "? [a\n", "steps: 1\n  lr: 2"])
        path.write_text(text)
        return
    if family == "toplevel":
        path.write_text(rng.choice(["- 1\n- 2\n", "42\n", "just a string\n", "", "null\n", "[steps, 1]\n"]))
        return
    if family == "garbage":
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))) + b"\xff\xfe\x00")
        return
    if family == "unknown":
        body[rng.choice(["stpes", "learning_rate", "foo", "Steps", "1", "config"])] = 1
    elif family == "type":
        name = rng.choice(["steps", "lr", "gamma", "seed", "progress", "agent", "norm", "device", "batch_size"])
        body[name] = rng.choice([[1, 2], {"a": 1}, None, "ten", 1.5, 3] if name != "agent" else [[1], None, {"a": 1}])
        if name == "progress":
            body[name] = rng.choice([3, "maybe", 0.5, [True]])
        if name in ("steps", "seed", "batch_size") and body[name] == 3:
            body[name] = "3x"
        if name in ("lr", "gamma") and body[name] in (3, 1.5):
            body[name] = "fast"
    elif family == "range":
        name = rng.choice(POSITIVE + NON_NEGATIVE + POSITIVE_FLOAT + UNIT)
        value = _out_of_range(rng, name)
        body[name] = {"nan": float("nan"), "NaN": float("nan"), "inf": float("inf"), "-inf": float("-inf"),
                      "1e400": float("inf")}.get(value, value)
        if isinstance(body[name], str):
            body[name] = float(body[name]) if type(FIELDS[name].default) is float else int(float(body[name]))
    else:
        name = rng.choice(list(REGISTRY_FIELDS))
        reg = REGISTRY_FIELDS[name]
        body[name] = _misspell(rng, rng.choice(reg.names()), set(reg.names()))
    import yaml

    path.write_text(yaml.safe_dump(body))


SCENARIO_FILES = [
    "this is not python (",
    "raise RuntimeError('boom at import')",
    "x = 1  # registers nothing",
    "import crl\n@crl.register_scenario('fuzz-{i}')\ndef s(cfg):\n    return 42\n",
    "import crl\n@crl.register_scenario('fuzz-{i}')\ndef s(cfg):\n    return crl.Scenario('fuzz-{i}', [])\n",
    "import crl\n@crl.register_scenario('fuzz-{i}')\ndef s(cfg):\n    return crl.Scenario('fuzz-{i}', "
    "[crl.RLTask('t', crl.gym_env_factory('CartPole-v1'), steps=-5)])\n",
    "import crl\n@crl.register_scenario('fuzz-{i}')\ndef s(cfg):\n    return crl.Scenario('fuzz-{i}', "
    "[crl.RLTask('t', crl.gym_env_factory('CartPole-v1')), crl.RLTask('t', crl.gym_env_factory('CartPole-v1'))])\n",
    "import crl\n@crl.register_scenario('fuzz-{i}')\ndef s(cfg):\n    return crl.Scenario('fuzz-{i}', "
    "[crl.RLTask('t', crl.gym_env_factory('CartPole-v1'))], cycles=0)\n",
]


def generate_cases(tmp: Path, root: Path, n: int = N_CASES, seed: int = SEED) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    cases: list[tuple[str, list[str]]] = []
    for i in range(n):
        family = rng.choices(["flags", "config", "scenario", "resume", "sweep", "structure"],
                             weights=[50, 20, 6, 4, 14, 6])[0]
        label = f"case {i} ({family})"
        if family == "flags":
            argv = [*VALID, "--run-dir", str(root)]
            muts = [m for _ in range(rng.choice([1, 1, 1, 2, 3])) for m in _flag_mutation(rng)]
            cases.append((label, argv + muts))
        elif family == "config":
            path = tmp / f"cfg{i}.yaml"
            kind = rng.random()
            if kind < 0.08:
                path = tmp / f"missing{i}.yaml"
            elif kind < 0.12:
                path = tmp / f"dir{i}.yaml"
                path.mkdir()
            elif kind < 0.16:
                path.write_text("scenario: atari\n")
            else:
                _yaml_case(rng, path)
            sub = rng.choice([["gym"], ["run", "gym"]])
            cases.append((label, [*sub, "--run-dir", str(root), "--config", str(path)]))
        elif family == "scenario":
            j = rng.randrange(len(SCENARIO_FILES) + 2)
            if j == len(SCENARIO_FILES):
                spec = str(tmp / f"nope{i}.py")
            else:
                path = tmp / f"scen{i}.py"
                path.write_text(SCENARIO_FILES[j % len(SCENARIO_FILES)].replace("{i}", str(i)))
                spec = str(path) + (":not-registered" if j == len(SCENARIO_FILES) + 1 else "")
            cases.append((label, ["run", spec, "--run-dir", str(root), "--no-progress", "--steps", "100"]))
        elif family == "resume":
            kind = rng.randrange(4)
            target = tmp / f"resume{i}"
            if kind == 1:
                target.write_text("a file")
            elif kind == 2:
                target.mkdir()
            elif kind == 3:
                target.mkdir()
                (target / "config.yaml").write_text(rng.choice(["steps: [", "steps: 100\n", "- 1\n", "foo: 1\n"]))
            cases.append((label, ["gym", "--resume", str(target)]))
        elif family == "sweep":
            base = ["--", *VALID, "--run-dir", str(root)]
            grid = ["--grid", "seed=0,1"]
            bad = rng.choice([
                (["--grid", "seed"], base), (["--grid", "=1"], base), (["--grid", "foo=1,2"], base),
                (["--grid", "seed=a,b"], base), (["--grid", "seed=0,0"], base), (["--grid", "seed="], base),
                (["--grid", "name=a,b"], base), (["--grid", "norm=none,layernrom"], base),
                (["--grid", "steps=0,100"], base), (["--grid", "lr=nan"], base), (grid, []), (grid, ["--"]),
                (grid, ["--", "compare", "x"]), (grid, [*base, "--name", "x"]), (grid, [*base, "--resume", "x"]),
                (grid, [*base, "--bogus"]), (["--grid", "steps=100,200"], base), ([], base),
                ([*grid, "--cpus-per-run", rng.choice(["0", "-1", "nan", "inf", "x"])], base),
                ([*grid, "--gpus-per-run", rng.choice(["-1", "nan", "x"])], base),
                ([*grid, "--max-concurrent", rng.choice(["0", "-2", "1.5", "x"])], base),
                ([*grid, "--backend", "slurm"], base), ([*grid, "--address", "auto"], base),
                ([*grid, "--grid-file", str(tmp / f"nogrid{i}.yaml")], base),
                (["--grid-file", str(_grid_file(tmp, i, rng))], base),
            ])
            cases.append((label, ["sweep", "--backend", "local", *bad[0], *bad[1]]))
        else:
            cases.append((label, rng.choice([
                [], ["nosuchcommand"], ["gym", "--steps"], ["gym", "extra", "--run-dir", str(root)], ["run"],
                ["gym", "--run-dir"], ["GYM"], ["--steps", "5"], ["gym", "--steps", "10", "--steps"],
                ["compare"], ["gym", "--env-id"],
            ])))
    return cases


def _grid_file(tmp: Path, i: int, rng: random.Random) -> Path:
    path = tmp / f"grid{i}.yaml"
    path.write_text(rng.choice(["seed: [0, 1", "- seed\n", "foo: [1, 2]\n", "seed: [a, b]\n", "seed: []\n",
                                "42\n", "", "seed: [[0]]\n", "resume: [x]\n", "lr: [.nan]\n"]))
    return path


def test_fuzz_invalid_input_exit_2_one_line_nothing_written(tmp_path, capsys):
    load_builtins()
    root = tmp_path / "runs"
    cases = generate_cases(tmp_path, root)
    assert len(cases) >= 200
    failures = []
    for label, argv in cases:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse --help/--version only; nothing here asks for them
            code = exc.code
        except BaseException as exc:  # noqa: BLE001  (a traceback would reach the user)
            failures.append(f"{label}: {argv}: raised {type(exc).__name__}: {exc}")
            continue
        err = capsys.readouterr().err
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error: ")]
        if code != 2 or "Traceback" in err or len(errors) != 1 or not lines or lines[-1] != errors[0]:
            failures.append(f"{label}: {argv}: exit {code}, stderr {lines[-3:]}")
        if root.exists():
            failures.append(f"{label}: {argv}: wrote {sorted(str(p) for p in root.rglob('*'))[:3]}")
            import shutil

            shutil.rmtree(root)
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures[:40])


def test_fuzz_case_end_to_end_in_a_real_process(tmp_path):
    """What a user sees: one line on stderr, exit code 2, no traceback (a fresh interpreter)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    (tmp_path / "bad.yaml").write_bytes(b"steps: [1\n\xff\xfe")
    argv = ["gym", "--steps", "100", "--config", str(tmp_path / "bad.yaml")]
    proc = subprocess.run([sys.executable, "-m", "crl.cli", *argv, "--run-dir", str(tmp_path / "runs")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


def test_config_file_gives_defaults_and_flags_win(tmp_path):
    """The valid side of ``--config``: a run's config.yaml (or a few fields) as defaults."""
    from crl.flags import config_from_args, parse_args

    path = tmp_path / "c.yaml"
    path.write_text("steps: 1234\nlr: 0.01\nnorm: layernorm\ndouble_dqn: false\nscenario: gym\n")
    cfg, explicit = config_from_args(parse_args(["gym", "--config", str(path), "--lr", "0.5"]))
    assert (cfg.steps, cfg.lr, cfg.norm, cfg.double_dqn, cfg.torso) == (1234, 0.5, "layernorm", False, "mlp")
    assert {"steps", "lr", "norm", "double_dqn"} <= explicit  # not shrunk by adapt_to_budget
