"""Continual-learning protocols as the literature defines them (issue 13, items 3-5): mammoth's
class-IL forward transfer, ER-ACE's mask as the official code, the published Split CIFAR class
orders and augmentation, and RL forgetting on normalised scores."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import crl
from _tiny_datasets import write_cifar10
from agents.classifier import ClassifierLearner
from crl.config import make_config
from crl.hooks import Hook
from crl.metrics import forgetting as F
from crl.metrics.hooks import ForgettingHook
from crl.metrics.human_normalized import REFERENCE_SCORES
from crl.options import building
from crl.registry import SCENARIOS, load_builtins
from scenarios.datasets import ArrayDataset, CropFlip, Normalize
from scenarios.split import class_order

load_builtins()


class Recorder:
    """The logger part of a run: every scalar, by step."""

    def __init__(self):
        self.records: list[tuple[str, float, int]] = []

    def scalar(self, tag, value, step):
        self.records.append((tag, float(value), step))

    def at(self, step: int) -> dict[str, float]:
        return {t: v for t, v, s in self.records if s == step}


# ----------------------------------------------------------------------------- class-IL FWT (mammoth)


def _task(name, classes, x, y, label):
    data = ArrayDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    return crl.SupervisedTask(name, data, data, classes, task_label=label)


def _identity_learner(tasks, **over):
    """A classifier whose logits are ``relu(x)``: one hidden layer of 4 units, identity weights."""
    cfg = make_config("supervised", mlp_hidden="4", metrics_every=0, **over)
    scenario = crl.Scenario("hand", tasks)
    with building(cfg):
        learner = ClassifierLearner(cfg, scenario, torch.device("cpu"))
    with torch.no_grad():
        for layer in (learner.network.torso.blocks[0].layer, learner.network.output):
            layer.weight.copy_(torch.eye(4))
            layer.bias.zero_()
    return learner


def test_class_il_fwt_equals_mammoth_definition():
    # task 0: classes 0, 1; task 1: classes 2, 3. Logits are the inputs themselves.
    t0 = _task("t0", [0, 1], [[3, 1, 0, 0], [1, 3, 0, 2]], [0, 1], 0)
    t1 = _task("t1", [2, 3], [[0, 0, 1, 0], [2, 0, 0, 1], [0, 0, 0, 1]], [2, 3, 3], 1)
    learner = _identity_learner([t0, t1])
    # mammoth's random_results_class: the network before training, every class in the argmax
    baseline = [learner.evaluate(t) for t in (t0, t1)]
    assert baseline == [pytest.approx(1.0), pytest.approx(2 / 3)]  # t1: [2,0,0,1] -> class 0, wrong
    learner._start_task(0, t0)  # "trained" on task 0: seen classes {0, 1}
    with torch.no_grad():
        learner.network.output.bias.copy_(torch.tensor([-1.0, -1.0, 0.0, 0.5]))  # training moved the logits
    row0 = [learner.evaluate(t) for t in (t0, t1)]
    # mammoth evaluates the upcoming task 1 with classes 0..3 in the argmax (dataset.i after its loaders):
    # t1 logits + bias: [-1,-1,1,.5] -> 2 ok; [1,-1,0,1.5] -> 3 ok; [-1,-1,0,1.5] -> 3 ok
    assert row0 == [pytest.approx(1.0), pytest.approx(1.0)]
    # with task 1's classes masked (the old behaviour) it would be 0 and FWT = -mean(b_i)
    learner._start_task(1, t1)
    row1 = [learner.evaluate(t) for t in (t0, t1)]
    R = [row0, row1]
    results = [[row0[0], row0[1]], [row1[0], row1[1]]]  # mammoth's results[t-1] += [acc on task t]
    mammoth_fwt = np.mean([results[i - 1][i] - baseline[i] for i in range(1, 2)])  # utils/metrics.forward_transfer
    assert F.forward_transfer(R, baseline=baseline) == pytest.approx(mammoth_fwt) == pytest.approx(1 / 3)
    # ... and through the hook, which logs exactly that value
    run = SimpleNamespace(scenario=crl.Scenario("hand", [t0, t1]), eval_matrix=np.array(R), global_step=7,
                          logger=Recorder())
    run.stream = run.scenario.stream()
    hook = ForgettingHook()
    hook.init_scores = baseline
    hook.on_task_end(run, 1, t1)
    assert run.logger.at(7)["forgetting/fwt"] == pytest.approx(mammoth_fwt)


def test_one_task_logs_no_forgetting_or_transfer():
    run = SimpleNamespace(scenario=SimpleNamespace(tasks=[SimpleNamespace(name="a")], name="x", kind="supervised"),
                          eval_matrix=np.array([[0.7]]), global_step=3, logger=Recorder())
    run.stream = run.scenario.tasks
    ForgettingHook().on_task_end(run, 0, None)
    assert set(run.logger.at(3)) == {"forgetting/avg_final", "forgetting/avg_seen", "forgetting/num_tasks"}


# ----------------------------------------------------------------------------- ER-ACE mask


def official_er_ace_mask(labels: torch.Tensor, seen_so_far: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The rule of the official ER-ACE / mammoth ``er_ace.observe``, transcribed on label ids."""
    present = labels.unique()
    seen = torch.cat([seen_so_far, present]).unique()
    mask = torch.zeros(num_classes)
    mask[present] = 1
    if seen.max() < num_classes - 1:
        mask[seen.max():] = 1
    return mask.bool()


def test_er_ace_masks_as_the_official_code_on_a_hand_built_batch():
    C = 6
    tasks = [_task(f"t{i}", [2 * i, 2 * i + 1], [[1, 0, 0, 0]] * 2, [2 * i, 2 * i + 1], i) for i in range(3)]
    for t in tasks:  # 6 classes, 4 inputs: pad the inputs to 6 features
        t.train = t.test = ArrayDataset(torch.zeros(2, 6), t.train.y)
    cfg = make_config("supervised", mlp_hidden="8", strategy="er-ace", metrics_every=0)
    with building(cfg):
        learner = ClassifierLearner(cfg, crl.Scenario("hand", tasks), torch.device("cpu"))
    seen = torch.tensor([], dtype=torch.long)
    for batch in ([0, 1, 1], [2, 2], [0, 3], [5, 4]):
        y = torch.tensor(batch)
        learner._observe_labels(y)
        want = official_er_ace_mask(y, seen, C)
        seen = torch.cat([seen, y]).unique()
        assert torch.equal(learner._ace_visible(y), want), (batch, want)
    # spelled out: seen {0, 1}, batch [2, 2] -> class 2 present, classes >= 2 (the highest seen) visible
    assert official_er_ace_mask(torch.tensor([2, 2]), torch.tensor([0, 1]), C).tolist() == [0, 0, 1, 1, 1, 1]
    # the loss: CE of the incoming logits with the mask applied, + CE of the memory samples (each a mean)
    logits = torch.randn(5, C)
    batch = {"y": torch.tensor([5, 4, 0, 1, 2]), "task_ids": torch.tensor([2, 2, 0, 0, 1]), "num_incoming": 2,
             "mem_sizes": [3]}
    terms = learner._loss_terms(logits, batch)
    mask = official_er_ace_mask(torch.tensor([5, 4]), seen, C)
    want = TF.cross_entropy(logits[:2].masked_fill(~mask, torch.finfo(torch.float32).min), batch["y"][:2]) + \
        TF.cross_entropy(logits[2:], batch["y"][2:])
    assert terms.mean().item() == pytest.approx(want.item(), rel=1e-6)


def test_er_ace_rank_is_the_published_label_id_under_adab2n_order(tmp_path):
    write_cifar10(tmp_path, per_class=1)
    cfg = make_config("supervised", data_dir=str(tmp_path), class_order="adab2n", seed=3, strategy="er-ace",
                      torso="mlp", mlp_hidden="4", metrics_every=0)
    scenario = SCENARIOS.get("split-cifar10")(cfg)
    with building(cfg):
        learner = ClassifierLearner(cfg, scenario, torch.device("cpu"))
    label_of = np.random.default_rng(45).permutation(10)  # AdaB2N: class c becomes label label_of[c]
    assert learner.class_rank.tolist() == label_of.tolist()


# ----------------------------------------------------------------------------- class orders


def test_class_orders_reproduce_the_published_ones(tmp_path):
    assert class_order(10, 7, "fixed") == list(range(10))  # mammoth: the dataset's order
    assert class_order(100, 0, "adab2n") == list(range(100))  # AdaB2N: identity for seed 0
    write_cifar10(tmp_path, per_class=1)
    for seed in (1, 4):
        label_of = np.random.default_rng(42 + seed).permutation(10)  # AdaB2N's get_task_order
        cfg = make_config("supervised", data_dir=str(tmp_path), class_order="adab2n", seed=seed)
        tasks = SCENARIOS.get("split-cifar10")(cfg).tasks
        for i, t in enumerate(tasks):  # AdaB2N's task i: the classes whose new label is 2i or 2i + 1
            assert sorted(t.classes) == sorted(c for c in range(10) if 2 * i <= label_of[c] < 2 * i + 2)
            assert set(t.train.y.tolist()) == set(t.classes)
    fixed = SCENARIOS.get("split-cifar10")(make_config("supervised", data_dir=str(tmp_path), class_order="fixed",
                                                        seed=5)).tasks
    assert [list(t.classes) for t in fixed] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    seeded = SCENARIOS.get("split-cifar10")(make_config("supervised", data_dir=str(tmp_path), seed=5)).tasks
    order = torch.randperm(10, generator=torch.Generator().manual_seed(5)).tolist()
    assert [t.info["class_order"] for t in seeded] == [order[2 * i:2 * i + 2] for i in range(5)]


# ----------------------------------------------------------------------------- augmentation


class BatchGrab(Hook):
    """Keeps the model inputs of every training batch (``transform_loss`` sees the batch)."""

    name = "grab"

    def __init__(self):
        self.batches = []

    def transform_loss(self, run, per_sample_loss, batch):
        self.batches.append((batch["x"].detach().clone(), batch["num_incoming"]))
        return per_sample_loss


def _crops(img: torch.Tensor, fill: torch.Tensor, p: int = 4) -> torch.Tensor:
    """Every crop of the padded image and its mirror: (2 * (2p+1)^2, C, H, W)."""
    C, H, W = img.shape
    padded = fill.view(-1, 1, 1).expand(C, H + 2 * p, W + 2 * p).clone()
    padded[:, p:p + H, p:p + W] = img
    out = [padded[:, i:i + H, j:j + W] for i in range(2 * p + 1) for j in range(2 * p + 1)]
    return torch.stack(out + [o.flip(2) for o in out])


def test_split_cifar_augments_train_batches_not_test(tmp_path):
    write_cifar10(tmp_path, per_class=1)
    cfg = make_config("supervised", data_dir=str(tmp_path), class_order="fixed", torso="mlp", mlp_hidden="8",
                      batch_size=4, metrics_every=0, strategy="replay", replay_size=20)
    scenario = SCENARIOS.get("split-cifar10")(cfg)
    t0 = scenario.tasks[0]
    assert isinstance(t0.train.augment, CropFlip) and getattr(t0.test, "augment", None) is None
    norm = t0.train.transform
    assert isinstance(norm, Normalize)
    fill = torch.tensor([-m / s for m, s in zip(norm.mean, norm.std)])  # a 0 pixel, normalised
    with building(cfg):
        learner = ClassifierLearner(cfg, scenario, torch.device("cpu"))
    grab = BatchGrab()
    learner.run = SimpleNamespace(task_index=0, global_step=0, stop_requested=False, logger=Recorder(),
                                  hooks=crl.hooks.HookList([grab]))
    learner.train(t0, 3)
    learner.run.task_index = 1
    learner.train(scenario.tasks[1], 2)  # incoming + replayed samples
    raw = torch.cat([norm(d.x) for d in learner.train_data])  # every un-augmented training input of the stream
    windows = torch.cat([_crops(r, fill) for r in raw])  # every crop / mirrored crop of every raw image

    def is_window(img):
        return bool((windows - img).abs().amax(dim=(1, 2, 3)).min() < 1e-5)

    def is_raw(img):
        return bool((raw - img).abs().amax(dim=(1, 2, 3)).min() == 0)

    samples = torch.cat([x for x, _ in grab.batches])
    assert all(is_window(img) for img in samples[:4])  # each one a crop (maybe mirrored) of a raw image, 0-padded
    assert sum(not is_raw(img) for img in samples) > len(samples) // 2  # and mostly not the raw image itself
    x, B = grab.batches[-1]
    assert len(x) > B and all(is_window(img) for img in x[B:B + 2])  # replayed samples are augmented too
    assert not all(is_raw(img) for img in x[B:])
    # test batches: exactly the normalised raw test images
    test = learner.test_data[0]
    assert torch.equal(test.inputs(slice(0, len(test))), norm(t0.test.x))
    # --augment none: the training batches are the raw images
    cfg_none = make_config("supervised", data_dir=str(tmp_path), augment="none", class_order="fixed")
    assert getattr(SCENARIOS.get("split-cifar10")(cfg_none).tasks[0].train, "augment", None) is None


def test_crop_flip_is_a_window_of_the_padded_image():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    out = CropFlip(2, (-1.0, -2.0, -3.0))(x, torch.Generator().manual_seed(0))
    fill = torch.tensor([-1.0, -2.0, -3.0])
    for img, o in zip(x, out):
        assert any(torch.equal(c, o) for c in _crops(img, fill, 2))


# ----------------------------------------------------------------------------- RL forgetting on normalised scores


def _rl_run(name, games, matrix, step=50):
    tasks = [crl.RLTask(f"{g}-task", lambda n, s: None, info={"game": g}) for g in games]
    run = SimpleNamespace(scenario=crl.Scenario(name, tasks), eval_matrix=np.array(matrix), global_step=step,
                          logger=Recorder())
    run.stream = run.scenario.stream()
    return run


def test_rl_forgetting_on_human_normalized_scores():
    R = [[20.0, 300.0], [-10.0, 900.0]]  # pong, then space_invaders
    run = _rl_run("sequential-atari", ["pong", "space_invaders"], R)
    hook = ForgettingHook()
    hook.init_scores = [-21.0, 150.0]
    hook.on_task_end(run, 1, None)
    got = run.logger.at(50)
    (p0, p1), (s0, s1) = REFERENCE_SCORES["pong"], REFERENCE_SCORES["space_invaders"]
    hns = np.array([[(20 - p0) / (p1 - p0), (300 - s0) / (s1 - s0)], [(-10 - p0) / (p1 - p0), (900 - s0) / (s1 - s0)]])
    base = [(-21 - p0) / (p1 - p0), (150 - s0) / (s1 - s0)]
    assert got["forgetting/hns/avg_final"] == pytest.approx(hns[1].mean())
    assert got["forgetting/hns/max_minus_last"] == pytest.approx(hns[0, 0] - hns[1, 0])
    assert got["forgetting/hns/bwt"] == pytest.approx(hns[1, 0] - hns[0, 0])
    assert got["forgetting/hns/fwt"] == pytest.approx(hns[0, 1] - base[1])
    assert got["forgetting/max_minus_last"] == pytest.approx(30.0)  # the raw ones stay beside them
    assert "forgetting/cora/avg_final" not in got and "forgetting/hns/num_tasks" not in got


def test_rl_forgetting_on_cora_scale():
    run = _rl_run("mini-cora-atari", ["space_invaders", "beam_rider"], [[400.0, 100.0], [200.0, 800.0]])
    hook = ForgettingHook()
    for scores in ([100.0, 50.0], [-500.0, 100.0], [400.0, 100.0], [200.0, 800.0]):  # every eval of the run
        hook.on_eval(run, scores)
    hook.on_task_end(run, 1, None)
    got = run.logger.at(50)
    scale = [500.0, 800.0]  # max |score| per task over all evals (CORA's return_scale = 1 / that)
    assert F.cora_scale([[100, 50], [-500, 100], [400, 100], [200, 800]]).tolist() == scale
    assert got["forgetting/cora/max_minus_last"] == pytest.approx((400 - 200) / 500)
    assert got["forgetting/cora/avg_final"] == pytest.approx((200 / 500 + 800 / 800) / 2)
    assert got["forgetting/hns/max_minus_last"] == pytest.approx(
        (400 - 200) / (REFERENCE_SCORES["space_invaders"][1] - REFERENCE_SCORES["space_invaders"][0]))
    assert math.isfinite(got["forgetting/max_minus_last"])
