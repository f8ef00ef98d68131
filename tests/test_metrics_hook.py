"""crl.metrics.hooks: the plasticity hook against hand-computed values on a fake run, and
end-to-end runs whose TensorBoard event files are read back (EventAccumulator)."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn

import crl
from _tiny_datasets import write_mnist
from crl.config import make_config
from crl.metrics import forgetting as F
from crl.metrics import plasticity as P
from crl.metrics.hooks import (FORGETTING_METRICS, NETWORK_METRICS, OPTIMIZER_METRICS, PARAM_METRICS, STEP_METRICS,
                               UNIT_METRICS, ForgettingHook, PlasticityHook, default_hooks, optimizer_form,
                               parameter_layers, scalars_layout, stream_matrix)
from crl.nn.network import build_network
from crl.registry import HEADS

HIDDEN = ["torso.blocks.0", "torso.blocks.1"]
PARAM_LAYERS = ["torso.blocks.0.layer", "torso.blocks.1.layer", "output"]


def expected_plasticity_tags(adaptive_optimizer: bool = True) -> set[str]:
    """Every plasticity tag of the tiny Q-network; ``below_eps`` only with an RMSprop/Adam optimizer."""
    skip = () if adaptive_optimizer else OPTIMIZER_METRICS
    tags = {f"plasticity/{m}" for m in NETWORK_METRICS if m not in skip}
    tags |= {f"plasticity/{layer}/{m}" for layer in HIDDEN for m in UNIT_METRICS}
    tags |= {f"plasticity/{layer}/{m}" for layer in PARAM_LAYERS for m in PARAM_METRICS + OPTIMIZER_METRICS
             if m not in skip}
    return tags


def read_events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


# ----------------------------------------------------------------------------- a fake run


class FakeLogger:
    def __init__(self):
        self.records: list[tuple[str, float, int]] = []
        self.latest: dict[str, float] = {}

    def scalar(self, tag, value, step):
        self.records.append((tag, float(value), step))
        self.latest[tag] = float(value)

    def at(self, step: int) -> dict[str, float]:
        return {t: v for t, v, s in self.records if s == step}


class FakeLearner:
    def __init__(self, network, probe):
        self.network, self.probe, self.metric_step = network, probe, 0

    def probe_batch(self, task):
        return self.probe


def q_network(hidden: str = "16,16") -> nn.Module:
    cfg = make_config("gym", mlp_hidden=hidden)
    head = HEADS.get("hlgauss")(cfg)
    return build_network(cfg, (4,), 2, head)


def with_params(net: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``net`` holding ``params``."""
    out = copy.deepcopy(net)
    with torch.no_grad():
        for n, p in out.named_parameters():
            p.copy_(params[n])
    return out


def with_dead_units(net: nn.Module, dead: int) -> None:
    """Units 0..dead-1 of the first layer output exactly 0 on non-negative inputs; the others
    are strictly positive there (non-negative weights, bias 0.1)."""
    layer = net.torso.blocks[0].layer
    with torch.no_grad():
        layer.weight.abs_()
        layer.bias.fill_(0.1)
        layer.weight[:dead] = 0.0
        layer.bias[:dead] = -1.0


@pytest.fixture
def fake():
    torch.manual_seed(0)
    net = q_network()
    with_dead_units(net, dead=4)
    probe = torch.rand(64, 4)  # non-negative observations
    run = SimpleNamespace(learner=FakeLearner(net, probe), logger=FakeLogger(), global_step=0, task=None,
                          scenario=SimpleNamespace(kind="rl", tasks=[]))
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)
    x, y = torch.rand(32, 4), torch.randn(32, 2, net.head.num_outputs)
    log: list[dict] = []

    def step(hook, max_norm=1e-3):
        """One learner update as agents/dqn.py does it: backward, clip, step, hooks."""
        opt.zero_grad(set_to_none=True)
        ((net(x) - y) ** 2).mean().backward()
        grads = {n: p.grad.detach().clone() for n, p in net.named_parameters()}
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        total = float(nn.utils.clip_grad_norm_(net.parameters(), max_norm))
        run.learner.metric_step += 1
        opt.step()
        hook.after_optimizer_step(run)
        log.append({"grads": grads, "before": before, "total": total, "step": run.learner.metric_step})

    return SimpleNamespace(net=net, probe=probe, run=run, step=step, log=log)


def test_values_at_a_metric_step_match_the_formulas(fake):
    hook = PlasticityHook(every=5, probe_every=1, probe_steps=5)
    hook.on_run_start(fake.run)
    hook.on_task_start(fake.run, 0, None)
    init = {n: p.detach().clone() for n, p in fake.net.named_parameters()}
    for _ in range(6):  # step 5: the network's state, then armed; step 6: that update's gradient and step size
        fake.step(hook)
    at5, at6 = fake.run.logger.at(5), fake.run.logger.at(6)
    last = fake.log[-1]  # step 6
    net = fake.net
    params = {n: p.detach() for n, p in net.named_parameters()}
    state5 = last["before"]  # the parameters after step 5

    # one optimizer step's metrics, at the step of that update: gradient norms before clipping (the clip
    # threshold 1e-3 is far below them) and ||W_after - W_before|| / ||W_before||
    assert {t.split("/")[-1] for t in at6 if t.startswith("plasticity/")} == set(STEP_METRICS)
    assert at6["plasticity/grad_norm"] == pytest.approx(last["total"], rel=1e-5)
    assert at6["plasticity/grad_norm"] > 100 * 1e-3
    assert at6["plasticity/output/grad_norm"] == pytest.approx(float(last["grads"]["output.weight"].norm()), rel=1e-5)
    w0, w1 = state5["torso.blocks.1.layer.weight"], params["torso.blocks.1.layer.weight"]
    assert at6["plasticity/torso.blocks.1.layer/update_ratio"] == pytest.approx(float((w1 - w0).norm() / w0.norm()),
                                                                               rel=1e-4)
    # the state at step 5: weight magnitudes and drift (init = task start here)
    out5 = state5["output.weight"]
    assert at5["plasticity/output/weight_norm"] == pytest.approx(float(out5.norm()), rel=1e-6)
    assert at5["plasticity/output/weight_mean_abs"] == pytest.approx(float(out5.abs().mean()), rel=1e-6)
    assert at5["plasticity/output/weight_rms"] == pytest.approx(float(out5.pow(2).mean().sqrt()), rel=1e-6)
    d = out5 - init["output.weight"]
    assert at5["plasticity/output/drift_init_rms"] == pytest.approx(float(d.pow(2).mean().sqrt()), rel=1e-5)
    every = torch.cat([t.flatten() for t in state5.values()])
    assert at5["plasticity/weight_mean_abs"] == pytest.approx(float(every.abs().mean()), rel=1e-6)
    assert at5["plasticity/drift_init"] == pytest.approx(at5["plasticity/drift_task"])
    assert at5["plasticity/drift_init"] > 0

    # dormant units: 4 of the 16 first-layer units are dead by construction (exact zeros on every input)
    assert at5["plasticity/torso.blocks.0/dormant_redo_tau0"] == 4 / 16
    assert at5["plasticity/torso.blocks.0/dormant_dohare"] == 4 / 16
    assert at5["plasticity/torso.blocks.0/active_fraction"] == 12 / 16
    net5 = with_params(net, state5)
    with torch.no_grad():
        h0 = net5.torso.blocks[0](fake.probe)
        h1 = net5.torso.blocks[1](h0)
        out = net5(fake.probe)
    for tau in (0.0, 0.025, 0.1):
        assert at5[f"plasticity/torso.blocks.1/dormant_redo_tau{tau:g}"] == P.dormant_fraction(h1, tau)
        assert at5[f"plasticity/dormant_redo_tau{tau:g}"] == P.overall_dormant_fraction([h0, h1], tau)
    assert at5["plasticity/dormant_dohare"] == P.dohare_dormant_fraction([h0, h1])
    assert at5["plasticity/srank_0.01"] == P.srank(h1, 0.01)
    assert at5["plasticity/effective_rank"] == pytest.approx(P.effective_rank(h1))
    assert at5["plasticity/stable_rank"] == pytest.approx(P.stable_rank(h1))
    assert at5["plasticity/feature_norm"] == pytest.approx(P.feature_norm(h1))
    assert at5["plasticity/feature_var_per_unit"] == pytest.approx(P.per_unit_variance(h1))
    assert at5["plasticity/predictive_entropy"] == pytest.approx(P.predictive_entropy(out))
    # the probe on the network and on a copy at its initial parameters, same seed: paired
    assert at5["plasticity/probe_loss_reduction"] > 0
    now = P.plasticity_probe(net5, fake.probe, steps=5, seed=hook.seed + 0)
    ref = P.plasticity_probe(with_params(net, init), fake.probe, steps=5, seed=hook.seed + 0)
    assert at5["plasticity/probe_loss_reduction"] == pytest.approx(now["reduction"], rel=1e-5)
    assert at5["plasticity/probe_loss_reduction_init"] == pytest.approx(ref["reduction"], rel=1e-5)
    assert at5["plasticity/probe_loss_after_init"] == pytest.approx(ref["loss_after"], rel=1e-5)
    assert at5["plasticity/probe_plasticity_loss"] == pytest.approx(now["loss_after"] - ref["loss_after"], rel=1e-4,
                                                                  abs=1e-6)
    assert set(at5) | set(at6) == expected_plasticity_tags(adaptive_optimizer=False) | {"perf/metrics_seconds"}
    assert "perf/metrics_seconds" in at5 and "perf/metrics_seconds" not in at6


def test_no_work_off_the_metric_steps_and_network_untouched(fake, monkeypatch):
    hook = PlasticityHook(every=10, probe_every=1, probe_steps=3)
    hook.on_run_start(fake.run)
    hook.on_task_start(fake.run, 0, None)
    calls = {"arm": 0, "state": 0, "step": 0, "grad": 0}
    for name, key in (("_arm", "arm"), ("_log_state_metrics", "state"), ("_log_step_metrics", "step"),
                      ("_record_grad", "grad")):
        original = getattr(hook, name)

        def counted(*a, _orig=original, _key=key, **k):
            calls[_key] += 1
            return _orig(*a, **k)

        monkeypatch.setattr(hook, name, counted)
    for _ in range(9):
        fake.step(hook)
    assert calls == {"arm": 0, "state": 0, "step": 0, "grad": 0} and not hook._handles
    assert not fake.run.logger.records
    state = {n: p.detach().clone() for n, p in fake.net.named_parameters()}
    fake.net.train()
    fake.run.learner.metric_step = 10
    hook.after_optimizer_step(fake.run)  # as if an update reached step 10: the state metrics, then armed
    assert calls["state"] == 1 and calls["arm"] == 1 and calls["step"] == 0 and hook._handles
    assert all(torch.equal(state[n], p) for n, p in fake.net.named_parameters())  # the probes train copies
    assert fake.net.training  # mode restored after the eval-mode forward pass
    fake.run.learner.metric_step = 9
    fake.step(hook)  # step 10: the armed update: gradient norms recorded in its backward pass
    assert calls["step"] == 1 and calls["grad"] > 0 and not hook._handles
    for _ in range(9):
        fake.step(hook)
    assert calls["arm"] == 1 and calls["state"] == 1 and calls["step"] == 1


def test_task_end_and_run_end_log_the_state_once_per_step(fake):
    hook = PlasticityHook(every=4, probe_steps=0)
    hook.on_run_start(fake.run)
    hook.on_task_start(fake.run, 0, None)
    for _ in range(6):
        fake.step(hook)
    hook.on_task_end(fake.run, 0, None)  # step 6: not a multiple of 4, logged because the task ends
    hook.on_task_start(fake.run, 1, None)
    for _ in range(2):
        fake.step(hook)  # step 8: a multiple and the task's end
    hook.on_task_end(fake.run, 1, None)
    hook.on_run_end(fake.run)
    steps = [s for t, _, s in fake.run.logger.records if t == "plasticity/srank_0.01"]
    assert steps == [4, 6, 8]
    assert [s for t, _, s in fake.run.logger.records if t == "plasticity/grad_norm"] == [5]  # after step 4's state
    assert not hook._handles  # the update armed at step 8 never came: disarmed at run end


def test_drift_task_restarts_at_task_start_and_state_round_trips(fake):
    hook = PlasticityHook(every=2, probe_every=100, probe_steps=1)
    hook.on_run_start(fake.run)
    hook.on_task_start(fake.run, 0, None)
    for _ in range(3):
        fake.step(hook)
    hook.on_task_start(fake.run, 1, None)
    for _ in range(2):
        fake.step(hook)  # step 4: the state
    got = fake.run.logger.at(4)
    assert got["plasticity/drift_task"] < got["plasticity/drift_init"]
    assert got["plasticity/drift_task_rms"] < got["plasticity/drift_init_rms"]
    again = PlasticityHook(every=2)
    again.load_state_dict(hook.state_dict())
    again.on_run_start(fake.run)
    assert again.next_at == hook.next_at == 6 and again.count == 2 and again.logged_at == 4
    assert all(torch.equal(again.init_params[n], hook.init_params[n]) for n in hook.init_params)


def test_nap_effective_lr_of_the_scale_invariant_layers():
    cfg = make_config("gym", mlp_hidden="8,8", norm="layernorm")
    net = build_network(cfg, (4,), 2, HEADS.get("hlgauss")(cfg))
    projectable = dict(net.projectable_weights())
    assert set(projectable) == {"torso.blocks.0.layer.weight", "torso.blocks.1.layer.weight"}
    for optimizer, form in ((torch.optim.SGD(net.parameters(), lr=0.1), "sgd"),
                            (torch.optim.Adam(net.parameters(), lr=0.1), "adaptive")):
        optimizer.param_groups[0]["lr"] = 0.05  # the group's lr now (a schedule moves it)
        run = SimpleNamespace(learner=SimpleNamespace(network=net, optimizer=optimizer))
        got = PlasticityHook._nap_effective_lrs(run, net)
        assert optimizer_form(optimizer) == form
        assert set(got) == {"torso.blocks.0.layer/nap_effective_lr", "torso.blocks.1.layer/nap_effective_lr"}
        w = float(projectable["torso.blocks.1.layer.weight"].detach().norm())
        expected = 0.05 / (w * w) if form == "sgd" else 0.05 / w
        assert got["torso.blocks.1.layer/nap_effective_lr"] == pytest.approx(expected, rel=1e-6)
    plain = q_network("8")  # no norm: no scale-invariant layer, nothing logged
    run = SimpleNamespace(learner=SimpleNamespace(network=plain, optimizer=torch.optim.SGD(plain.parameters(), lr=1)))
    assert PlasticityHook._nap_effective_lrs(run, plain) == {}


def test_below_eps_per_layer_and_network_from_the_optimizer_state():
    net = q_network("8")
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-3, eps=0.01, centered=True)
    run = SimpleNamespace(learner=SimpleNamespace(network=net, optimizer=opt))
    assert PlasticityHook._below_eps(run, net) == {}  # no state before the first step
    x = torch.randn(32, 4)
    net(x).pow(2).mean().backward()
    opt.step()
    got = PlasticityHook._below_eps(run, net)
    assert set(got) == {"torso.blocks.0.layer/below_eps", "output/below_eps", "below_eps"}
    params = dict(net.named_parameters())
    dens = {n: P.adaptive_denominator(opt.state[p], opt.param_groups[0]) for n, p in params.items()}
    w = dens["output.weight"]
    assert got["output/below_eps"] == pytest.approx(float((w < 0.01).float().mean()))
    below = sum(int((d < 0.01).sum()) for d in dens.values())
    assert got["below_eps"] == pytest.approx(below / sum(p.numel() for p in params.values()))
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(x).pow(2).mean().backward()
    sgd.step()
    assert PlasticityHook._below_eps(SimpleNamespace(learner=SimpleNamespace(optimizer=sgd)), net) == {}


def test_parameter_layers_measure_the_weight_tensor():
    layers = parameter_layers(q_network("8"))
    assert layers == {"torso.blocks.0.layer": ["torso.blocks.0.layer.weight"], "output": ["output.weight"]}


def test_metrics_off_means_no_plasticity_hook():
    kinds = [type(h).__name__ for h in default_hooks(make_config("gym", metrics_every=0))]
    assert kinds == ["HumanNormalizedScores", "ForgettingHook", "TensorBoardViews"]
    assert type(default_hooks(make_config("gym"))[0]) is PlasticityHook


def test_stream_matrix_unrolls_cycles():
    E = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])  # 2 tasks x 2 cycles
    S = stream_matrix(E, [0, 1, 0, 1], 3)
    assert S.tolist() == [[1.0, 2.0, 1.0], [3.0, 4.0, 3.0], [5.0, 6.0, 5.0]]


def test_forgetting_hook_without_init_scores_omits_fwt():
    run = SimpleNamespace(scenario=SimpleNamespace(tasks=[SimpleNamespace(name="a"), SimpleNamespace(name="b")]),
                          eval_matrix=np.array([[1.0, 0.5], [0.8, 2.0]]), global_step=10, logger=FakeLogger())
    run.stream = run.scenario.tasks
    hook = ForgettingHook(eval_at_init=False)
    hook.on_task_end(run, 1, None)
    got = run.logger.at(10)
    assert "forgetting/fwt" not in got
    assert got["forgetting/max_minus_last"] == pytest.approx(0.2)
    assert got["forgetting/avg_seen"] == pytest.approx(1.4)


# ----------------------------------------------------------------------------- end to end


def two_cartpoles() -> crl.Scenario:
    return crl.Scenario("two-cartpoles", [
        crl.RLTask("cartpole500", crl.gym_env_factory("CartPole-v1")),
        crl.RLTask("cartpole200", crl.gym_env_factory("CartPole-v1", max_episode_steps=200)),
    ])


SMALL = dict(steps=300, eval_every=150, eval_episodes=2, eval_max_steps=60, learning_starts=50, batch_size=16,
             mlp_hidden="32,32", buffer_size=2_000, checkpoint_every=10_000, target_update=50,
             eps_decay_steps=100, progress=False)


@pytest.fixture(scope="module")
def two_task_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    summary = crl.run(scenario=two_cartpoles(), preset="gym", run_dir=str(root), name="e2e", metrics_every=100,
                      **SMALL)
    run_dir = Path(summary["run_dir"])
    return SimpleNamespace(dir=run_dir, summary=summary, events=read_events(run_dir))


def test_e2e_every_plasticity_tag(two_task_run):
    tags = set(two_task_run.events.Tags()["scalars"])
    assert {t for t in tags if t.startswith("plasticity/")} == expected_plasticity_tags()
    for tag in (f"plasticity/{m}" for m in UNIT_METRICS):
        assert all(0.0 <= e.value <= 1.0 for e in two_task_run.events.Scalars(tag))


def scalar_steps(acc: EventAccumulator) -> dict[str, list[int]]:
    return {t: [e.step for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def assert_one_point_per_step(steps: dict[str, list[int]]) -> None:
    """No tag has two scalars at one step (TensorBoard would keep only one of them)."""
    repeated = {t: sorted({s for s in st if st.count(s) > 1}) for t, st in steps.items() if len(set(st)) < len(st)}
    assert not repeated, repeated


def test_e2e_plasticity_every_metrics_every_steps_and_at_each_task_end(two_task_run):
    """DQN, 2 tasks x 300 env steps, --metrics-every 100, one update every 2 env steps from step 51 (the
    update debt reaches 1 there): the first update at or after each multiple, and each task end."""
    steps = scalar_steps(two_task_run.events)
    state = [f"plasticity/{m}" for m in NETWORK_METRICS if m not in STEP_METRICS]
    for tag in state:
        assert steps[tag] == [101, 201, 300, 401, 501, 600], tag  # 300, 600: the task ends (they cover those multiples)
    for tag in (f"plasticity/{m}" for m in STEP_METRICS):
        assert steps[tag] == [103, 203, 403, 503], tag  # the update after each of those updates
    assert_one_point_per_step(steps)


def test_e2e_supervised_plasticity_from_the_first_task_to_the_last_step(tmp_path):
    """split-mnist on tiny MNIST files: 5 tasks x 6 images, batch 2, 2 epochs = 6 updates per task."""
    from crl.cli import main

    write_mnist(tmp_path / "data", per_class=3)
    argv = ["run", "split-mnist", "--data-dir", str(tmp_path / "data"), "--run-dir", str(tmp_path / "runs"),
            "--name", "r", "--no-progress", "--epochs", "2", "--batch-size", "2", "--mlp-hidden", "16",
            "--metrics-every", "4", "--probe-steps", "2", "--log-every", "5", "--intervention", "redo",
            "--redo-every", "4"]
    assert main(argv) == 0
    (run_dir,) = (tmp_path / "runs").glob("split-mnist/*/r")
    steps = scalar_steps(read_events(run_dir))
    multiples, task_ends = [4, 8, 12, 16, 20, 24, 28], [6, 12, 18, 24, 30]
    assert steps["plasticity/srank_0.01"] == sorted(set(multiples + task_ends))
    assert steps["plasticity/probe_plasticity_loss"] == sorted(set(multiples + task_ends))
    assert steps["plasticity/grad_norm"] == [m + 1 for m in multiples]
    assert steps["train/updates"] == [5, 10, 15, 20, 25, 30]
    # an intervention's scalars at the update they happened after, not at the chunk's (here the task's) start
    assert steps["train/redo_recycled_fraction"] == multiples
    assert_one_point_per_step(steps)


def test_e2e_every_forgetting_tag_equals_the_eval_matrix(two_task_run):
    acc = two_task_run.events
    tags = set(acc.Tags()["scalars"])
    assert {t for t in tags if t.startswith("forgetting/")} == {f"forgetting/{k}" for k in FORGETTING_METRICS}
    R = np.array(two_task_run.summary["eval_matrix"])
    init = [acc.Scalars(f"eval/{name}/score")[0] for name in ("cartpole500", "cartpole200")]
    assert all(e.step == 0 for e in init)  # the evaluation before training (FWT baseline)
    expected = F.summarize(R, baseline=[e.value for e in init])
    final = {t.split("/", 1)[1]: acc.Scalars(t)[-1].value for t in tags if t.startswith("forgetting/")}
    assert final["avg_final"] == pytest.approx(expected["avg_final"], rel=1e-6)
    assert final["bwt"] == pytest.approx(expected["bwt"], rel=1e-6, abs=1e-6)
    assert final["fwt"] == pytest.approx(expected["fwt"], rel=1e-6, abs=1e-6)
    assert final["max_minus_last"] == pytest.approx(expected["forgetting_max_minus_last"], rel=1e-6, abs=1e-6)
    assert final["first_minus_last"] == pytest.approx(expected["forgetting_first_minus_last"], rel=1e-6, abs=1e-6)
    assert final["num_tasks"] == 2
    after_first = [e for e in acc.Scalars("forgetting/num_tasks") if e.value == 1]
    assert len(after_first) == 1 and after_first[0].step == 300  # logged at the end of task 0 too
    summary = json.loads((two_task_run.dir / "summary.json").read_text())
    assert summary["forgetting/avg_final"] == pytest.approx(expected["avg_final"], rel=1e-6)


def test_e2e_tensorboard_views(two_task_run):
    acc = two_task_run.events
    assert [e.step for e in acc.Images("eval_matrix")] == [300, 600]
    assert "custom_scalars__config__" in acc.Tags()["tensors"]
    hp = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["mlp_hidden"].string_value == "32,32" and start.hparams["metrics_every"].number_value == 100
    exp = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/experiment"]).experiment
    metrics = {m.name.tag for m in exp.metric_infos}
    assert {"forgetting/avg_final", "eval/cartpole200/score", "plasticity/srank_0.01"} <= metrics
    assert not any(m.startswith("plasticity/torso") for m in metrics)


def test_layout_charts_cover_every_logged_metric_tag(two_task_run):
    layout = scalars_layout(q_network("32,32"))
    regexes = [re.compile(rx) for cat in layout.values() for _, (_, rxs) in cat.items() for rx in rxs]
    categories = {"plasticity: torso.blocks.0", "plasticity: torso.blocks.1", "plasticity: output", "forgetting"}
    assert categories <= set(layout)
    for tag in two_task_run.events.Tags()["scalars"]:
        if tag.startswith(("plasticity/", "forgetting/", "eval/")):
            assert any(rx.match(tag) for rx in regexes), tag
    per_layer = layout["plasticity: torso.blocks.0"]["weight norm"][1][0]
    assert re.match(per_layer, "plasticity/torso.blocks.0.layer/weight_norm")
    assert not re.match(per_layer, "plasticity/torso.blocks.1.layer/weight_norm")


def test_training_is_identical_with_metrics_on_or_off(tmp_path):
    from crl.cli import main

    runs = {}
    for every in (0, 100):
        args = ["gym", "--run-dir", str(tmp_path), "--name", f"m{every}", "--metrics-every", str(every),
                "--no-progress", "--steps", "450", "--eval-every", "450", "--log-every", "100",
                "--learning-starts", "49", "--probe-steps", "5"]
        for key, value in SMALL.items():
            if key not in ("steps", "eval_every", "progress", "learning_starts"):
                args += ["--" + key.replace("_", "-"), str(value)]
        assert main(args) == 0
        runs[every] = read_events(tmp_path / "gym" / "dqn-hlgauss-none-none" / f"m{every}")
    # one gym task of 450 env steps, an update at every even one from 50 (train_freq 2): the plasticity metrics at
    # each multiple of 100 and at the last step (a 5,000-step run with the gym preset's --metrics-every 5000 has
    # them at 5000)
    steps = scalar_steps(runs[100])
    assert steps["plasticity/srank_0.01"] == [100, 200, 300, 400, 450]
    assert_one_point_per_step(steps)
    for tag in ("train/loss", "train/episode_return", "eval/CartPole-v1/score"):
        on, off = runs[100].Scalars(tag), runs[0].Scalars(tag)
        assert [(e.step, e.value) for e in on] == [(e.step, e.value) for e in off], tag


@pytest.mark.parametrize("probe_every, probe_steps, probed", [(1, 2, [True, True, True]), (2, 2, [True, False, True]),
                                                              (1, 0, [False, False, False])])
def test_probe_cadence(fake, probe_every, probe_steps, probed):
    """--probe-every N: the probe on metric steps 1, N+1, ...; --probe-steps 0: never (other metrics still logged)."""
    hook = PlasticityHook(every=2, probe_every=probe_every, probe_steps=probe_steps)
    hook.on_run_start(fake.run)
    hook.on_task_start(fake.run, 0, None)
    for _ in range(7):  # the state (and the probe) at 2, 4, 6
        fake.step(hook)
    for step, expect in zip((2, 4, 6), probed):
        got = fake.run.logger.at(step)
        assert "plasticity/srank_0.01" in got
        assert ("plasticity/probe_loss_reduction" in got) == expect, step


def test_config_sets_the_probe():
    hook = next(h for h in default_hooks(make_config("atari", probe_every=3, probe_steps=7))
                if isinstance(h, PlasticityHook))
    assert (hook.every, hook.probe_every, hook.probe_steps) == (10_000, 3, 7)
