"""``crl run avalanche:<ClassName>``: a benchmark of ``avalanche.benchmarks.classic`` as a crl scenario.

Each name below is registered as the scenario ``avalanche:<ClassName>``; building it imports Avalanche,
calls ``avalanche.benchmarks.classic.<ClassName>(...)`` with the arguments it takes among
``n_experiences`` (``--n-tasks``; 0 = the value in :data:`DEFAULT_EXPERIENCES`, else Avalanche's own
default), ``seed`` (``--seed``), ``dataset_root`` (``--data-dir``: Avalanche's MNIST, Fashion-MNIST and
CIFAR loaders are torchvision's, so the folder layout is the one crl's own loaders read) and
``return_task_id`` (``--il-mode task``), and turns the result into a scenario with
:func:`crl.avalanche.from_avalanche`. Avalanche downloads a missing dataset with its own code, so
``--no-download``, ``--data-mirror`` and ``--max-train-samples`` are refused for these scenarios (one
error line), as is any argument Avalanche rejects.
"""
from __future__ import annotations

import inspect

from crl.errors import UserError
from crl.scenario import CycleOptions, register_scenario
from scenarios.datasets import DataOptions

# The benchmark classes of avalanche.benchmarks.classic (avalanche-lib 0.6), tests/test_avalanche_bridge.py
# checks that each still exists there.
CLASSIC = ("SplitMNIST", "PermutedMNIST", "RotatedMNIST", "SplitFMNIST", "SplitCIFAR10", "SplitCIFAR100",
           "SplitCIFAR110", "SplitTinyImageNet", "SplitCUB200", "SplitOmniglot", "SplitImageNet", "SplitInaturalist",
           "CORe50", "OpenLORIS", "CLStream51", "CLEAR", "EndlessCLSim", "ExMLMNIST", "ExMLCIFAR10", "ExMLCoRE50")
# n_experiences when --n-tasks is 0 and Avalanche has no default (the papers' usual task counts)
DEFAULT_EXPERIENCES = {"SplitMNIST": 5, "PermutedMNIST": 10, "RotatedMNIST": 10, "SplitFMNIST": 5, "SplitCIFAR10": 5,
                       "SplitCIFAR100": 10, "SplitCIFAR110": 11, "SplitTinyImageNet": 10, "SplitCUB200": 11,
                       "SplitOmniglot": 10}


def _refuse(cfg, name: str) -> None:
    why = f"avalanche:{name} downloads and reads its data with Avalanche's own code"
    if not cfg.download:
        raise UserError(f"--no-download: {why}; to stay offline, put the files in --data-dir ({cfg.data_dir})")
    if cfg.data_mirror:
        raise UserError(f"--data-mirror: {why}, which takes no mirror")
    if cfg.max_train_samples:
        raise UserError(f"--max-train-samples: not available for avalanche:{name}")


def build_classic(name: str, cfg):
    """``avalanche.benchmarks.classic.<name>(...)`` with the arguments of the module docstring."""
    _refuse(cfg, name)
    import avalanche.benchmarks.classic as classic

    cls = getattr(classic, name)
    params = inspect.signature(cls).parameters
    kwargs = {}
    if "n_experiences" in params:
        n = cfg.n_tasks or DEFAULT_EXPERIENCES.get(name)
        if n:
            kwargs["n_experiences"] = n
    elif cfg.n_tasks:
        raise UserError(f"--n-tasks: avalanche:{name} takes no number of experiences")
    if "seed" in params:
        kwargs["seed"] = cfg.seed
    if "dataset_root" in params:
        kwargs["dataset_root"] = cfg.data_dir
    if "return_task_id" in params:
        kwargs["return_task_id"] = cfg.il_mode == "task"
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    try:
        return cls(**kwargs)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001  (Avalanche's refusal or failed download, in one line)
        text = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"crl run avalanche:{name}: avalanche.benchmarks.classic.{name}({args}) failed: {text}") from None


def _factory(name: str):
    def build(cfg):
        from crl.avalanche import from_avalanche

        return from_avalanche(build_classic(name, cfg), name=f"avalanche-{name}", cycles=cfg.cycles)

    return build


for _name in CLASSIC:
    register_scenario(f"avalanche:{_name}", f"Avalanche's {_name} (avalanche.benchmarks.classic), through "
                                            "crl.from_avalanche", kind="supervised",
                      options=(DataOptions, CycleOptions))(_factory(_name))
