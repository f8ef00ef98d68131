"""Tiny dataset files in the real on-disk formats, written independently of crl's readers.

CIFAR: Python pickles of ``{"data": uint8 (N, 3072), "labels" | "fine_labels": [...]}``
(https://www.cs.toronto.edu/~kriz/cifar.html). MNIST: IDX files (big-endian header: magic
0x00000803 / 0x00000801, sizes as int32, then uint8 data), uncompressed, in ``MNIST/raw``.
Every class gets ``per_class`` samples; pixel values are random but reproducible.
"""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np


def _images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(num_classes: int, per_class: int, seed: int) -> np.ndarray:
    y = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(y)


def write_cifar10(root: Path, per_class: int = 2, test_per_class: int = 1) -> dict:
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    out = {"train_x": [], "train_y": []}
    for i in range(1, 6):
        y = _labels(10, per_class, seed=i)
        x = _images(len(y), (3072,), seed=100 + i)
        with open(folder / f"data_batch_{i}", "wb") as fh:
            pickle.dump({"batch_label": f"training batch {i} of 5", "labels": y.tolist(), "data": x}, fh, protocol=2)
        out["train_x"].append(x)
        out["train_y"].append(y)
    y = _labels(10, test_per_class, seed=0)
    x = _images(len(y), (3072,), seed=99)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({"batch_label": "testing batch 1 of 1", "labels": y.tolist(), "data": x}, fh, protocol=2)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names, "num_cases_per_batch": 10 * per_class, "num_vis": 3072}, fh, protocol=2)
    out.update(test_x=x, test_y=y, names=names)
    return out


def write_cifar100(root: Path, per_class: int = 2, test_per_class: int = 1) -> dict:
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, k, seed in (("train", per_class, 1), ("test", test_per_class, 2)):
        y = _labels(100, k, seed=seed)
        x = _images(len(y), (3072,), seed=10 + seed)
        with open(folder / split, "wb") as fh:
            pickle.dump({"filenames": [f"{i}.png" for i in range(len(y))], "fine_labels": y.tolist(),
                         "coarse_labels": (y // 5).tolist(), "data": x}, fh, protocol=2)
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    with open(folder / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"class{c}" for c in range(100)],
                     "coarse_label_names": [f"super{c}" for c in range(20)]}, fh, protocol=2)
    return out


def _idx(path: Path, array: np.ndarray) -> None:
    magic = 0x00000800 | array.ndim  # type code 0x08 = unsigned byte
    with open(path, "wb") as fh:
        fh.write(struct.pack(">i", magic))
        fh.write(struct.pack(f">{array.ndim}i", *array.shape))
        fh.write(array.astype(np.uint8).tobytes())


def write_mnist(root: Path, per_class: int = 3, test_per_class: int = 1) -> dict:
    folder = Path(root) / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, k, seed in (("train", per_class, 1), ("t10k", test_per_class, 2)):
        y = _labels(10, k, seed=seed)
        x = _images(len(y), (28, 28), seed=20 + seed)
        _idx(folder / f"{prefix}-images-idx3-ubyte", x)
        _idx(folder / f"{prefix}-labels-idx1-ubyte", y)
        out[f"{prefix}_x"], out[f"{prefix}_y"] = x, y
    return out
