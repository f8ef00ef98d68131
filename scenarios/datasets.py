"""Dataset loaders in the standard on-disk formats, plus the tensor dataset every built-in
supervised scenario uses.

CIFAR-10, CIFAR-100 and MNIST are read from ``--data-dir`` in their standard file formats; when
they are not there, they are downloaded on first use through torchvision's dataset classes
(``torchvision.datasets.CIFAR10/CIFAR100/MNIST``: their ``download()`` method, URLs, MD5 checksums
and tqdm progress bar) into a hidden staging folder of ``--data-dir``, and the extracted files are
moved into the layout below only once every archive has passed its checksum. ``--no-download``
forbids it; ``--data-mirror URL`` fetches ``URL/<archive name>`` instead (the archive names of
:data:`CHECKSUMS`). A failed download (offline, bad checksum, a mirror without the file, an
interrupted transfer) is one :class:`~crl.errors.UserError` saying what failed and where to put the
files by hand; the staging folder is removed, so nothing is left that looks complete.
scikit-learn's digits ship with scikit-learn.

=============  ==========================================================================
digits         ``sklearn.datasets.load_digits``: 1,797 grey 8x8 images, values 0-16,
               10 classes. Fixed split (no seed): per class, the first 80 % of its samples
               in scikit-learn's order train, the rest test (1,438 / 359).
mnist          ``<data-dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
               (IDX, uncompressed; a ``.gz`` beside it is read too). The layout torchvision
               and Avalanche use. IDX format (LeCun & Cortes, "THE MNIST DATABASE"): big-endian
               int32 magic ``0x00000803`` (images) / ``0x00000801`` (labels), then the
               dimension sizes as int32, then uint8 data.
cifar10        ``<data-dir>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``:
               Python pickles of dicts ``{"data": uint8 (N, 3072), "labels": [...]}``, rows
               3x32x32 channel-major (Krizhevsky 2009, "Learning Multiple Layers of Features
               from Tiny Images"; https://www.cs.toronto.edu/~kriz/cifar.html).
cifar100       ``<data-dir>/cifar-100-python/{train, test, meta}``, labels in ``fine_labels``.
=============  ==========================================================================

Inputs are kept in their storage dtype (uint8 for images) and turned into normalised floats
per batch, on the device, by :class:`Normalize` (mean/std: MNIST (0.1307, 0.3081); CIFAR-10
mammoth's (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2615); CIFAR-100 (0.5071, 0.4865,
0.4409) / (0.2673, 0.2564, 0.2762), the usual published statistics, unverified here).
"""
from __future__ import annotations

import functools
import gzip
import os
import pickle
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from crl.errors import UserError
from crl.options import option

DATASETS = ("digits", "mnist", "cifar10", "cifar100")


# ----------------------------------------------------------------------------- tensors


class Normalize:
    """Batch transform ``(x * scale - mean) / std`` per channel, in float32 (picklable)."""

    def __init__(self, scale: float, mean: tuple[float, ...] = (0.0,), std: tuple[float, ...] = (1.0,)):
        self.scale, self.mean, self.std = float(scale), tuple(mean), tuple(std)
        self._cache: dict = {}

    def _stats(self, x: torch.Tensor):
        key = (x.device, x.dim())
        if key not in self._cache:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            mean = torch.tensor(self.mean, device=x.device).view(shape)
            std = torch.tensor(self.std, device=x.device).view(shape)
            self._cache[key] = (mean, std)
        return self._cache[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return (x.float() * self.scale - mean) / std

    def __getstate__(self):
        return {"scale": self.scale, "mean": self.mean, "std": self.std, "_cache": {}}

    def __repr__(self) -> str:
        return f"Normalize(scale={self.scale}, mean={self.mean}, std={self.std})"


class PixelPermute:
    """Batch transform: a fixed permutation of the input's elements (all axes but the batch),
    applied after ``base`` (Goodfellow et al. 2013's permuted MNIST; per batch, not per sample)."""

    def __init__(self, perm: torch.Tensor, base: Callable | None = None):
        self.perm, self.base = perm, base
        self._on: dict = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.base is not None:
            x = self.base(x)
        perm = self._on.get(x.device)
        if perm is None:
            perm = self._on[x.device] = self.perm.to(x.device)
        return x.flatten(1)[:, perm].view(x.shape)

    def __getstate__(self):
        return {"perm": self.perm, "base": self.base, "_on": {}}


class CropFlip:
    """Training augmentation on a *batch* of model inputs ``(B, C, H, W)``, on their device:
    ``RandomCrop(H, padding)`` then ``RandomHorizontalFlip(0.5)`` per sample, as torchvision
    composes them in mammoth's and AdaB2N's ``seq-cifar10/100`` ``TRANSFORM``, in one gather (no
    per-sample Python).

    The inputs are already normalised (the dataset's ``transform`` ran first), so the padding is
    filled with ``fill`` per channel, the normalised value of a 0 pixel: the same numbers as
    padding the raw image with 0 and normalising after the crop, as torchvision does. Offsets and
    flips are drawn from ``generator`` (the learner's own, saved for exact resume).
    """

    def __init__(self, padding: int = 4, fill: tuple[float, ...] = (0.0,)):
        self.padding, self.fill = int(padding), tuple(float(f) for f in fill)

    @classmethod
    def for_normalized(cls, norm: "Normalize", padding: int = 4) -> "CropFlip":
        """Padding filled with ``norm`` of a zero pixel: ``-mean / std`` per channel."""
        return cls(padding, tuple(-m / s for m, s in zip(norm.mean, norm.std)))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        p = self.padding
        fill = torch.tensor(self.fill, dtype=x.dtype, device=x.device)
        padded = fill.view(1, -1, 1, 1).expand(B, C, H + 2 * p, W + 2 * p).clone()
        padded[:, :, p:p + H, p:p + W] = x
        draws = torch.randint(0, 2 * p + 1, (2, B), generator=generator)
        flip = torch.rand(B, generator=generator) < 0.5
        oy, ox, flip = draws[0].to(x.device), draws[1].to(x.device), flip.to(x.device)
        ar_h, ar_w = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
        rows = oy[:, None] + ar_h  # (B, H)
        cols = ox[:, None] + torch.where(flip[:, None], W - 1 - ar_w, ar_w)  # (B, W), reversed when flipped
        out = padded.permute(0, 2, 3, 1)[torch.arange(B, device=x.device)[:, None, None], rows[:, :, None],
                                          cols[:, None, :]]
        return out.permute(0, 3, 1, 2).contiguous()

    def __repr__(self) -> str:
        return f"CropFlip(padding={self.padding}, fill={self.fill})"


class ArrayDataset(torch.utils.data.Dataset):
    """``(x, y)`` pairs held as two tensors; ``transform`` maps a *batch* of ``x`` to model input.

    The classifier reads ``x``, ``y`` and ``transform`` directly (no per-sample Python), which is
    what keeps its epoch time near a plain PyTorch loop. Indexing one item applies the transform
    to that item alone, so it is also an ordinary ``Dataset``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Callable | None = None,
                 augment: Callable | None = None):
        if len(x) != len(y):
            raise UserError(f"dataset: {len(x)} inputs but {len(y)} labels")
        self.x, self.y, self.transform = x, y.long(), transform
        self.augment = augment  # training-only batch augmentation of model inputs (CropFlip); items never get it

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        x = self.x[i : i + 1] if isinstance(i, int) else self.x[i]
        x = self.transform(x) if self.transform is not None else x
        return (x[0] if isinstance(i, int) else x), self.y[i]

    @property
    def targets(self) -> torch.Tensor:  # the attribute Avalanche and torchvision datasets carry
        return self.y

    def subset(self, index, y: torch.Tensor | None = None, transform: Callable | None = ...) -> "ArrayDataset":
        """The samples at ``index`` (new labels ``y`` / transform if given)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return ArrayDataset(self.x[index], self.y[index] if y is None else y,
                            self.transform if transform is ... else transform, self.augment)


@dataclass
class DataOptions:
    """Where a supervised scenario's data comes from, and how it is split."""

    data_dir: str = option("data", "where datasets are read from, and downloaded to on first use (CIFAR-10, "
                                   "CIFAR-100, MNIST)")
    download: bool = option(True, "download a missing dataset (CIFAR-10, CIFAR-100, MNIST) into --data-dir through "
                                  "torchvision; --no-download: never, a missing file is an error")
    data_mirror: str = option("", "fetch dataset archives from URL/<archive name> (e.g. cifar-10-python.tar.gz, "
                                  "train-images-idx3-ubyte.gz) instead of their public hosts")
    n_tasks: int = option(0, "tasks (experiences) of split, permuted and plasticity scenarios; 0 = the scenario "
                             "default", check="non_negative")
    max_train_samples: int = option(0, "use a fixed subset of this many training samples of the dataset (0 = all)",
                                       check="non_negative")


@dataclass
class Dataset:
    """A dataset split in train and test, as crl's scenarios use it."""

    name: str
    train: ArrayDataset
    test: ArrayDataset
    num_classes: int
    class_names: list[str]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


# ----------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=2)
def load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits (no download), fixed 80/20 split per class."""
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    x = torch.from_numpy(d.images.astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8), values 0..16
    y = torch.from_numpy(d.target.astype(np.int64))
    train_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(d.target == c)
        cut = int(round(0.8 * len(idx)))
        train_idx.extend(idx[:cut])
        test_idx.extend(idx[cut:])
    tr, te = torch.tensor(sorted(train_idx)), torch.tensor(sorted(test_idx))
    tf = Normalize(1.0 / 16.0)
    return Dataset("digits", ArrayDataset(x[tr], y[tr], tf), ArrayDataset(x[te], y[te], tf), 10,
                   [str(c) for c in range(10)])


# ----------------------------------------------------------------------------- MNIST (IDX)

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped): magic ``0 0 dtype ndim``, ndim big-endian int32 sizes, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise UserError(f"--data-dir: {path} is not an IDX file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}i", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(dims)) if dims else 1
    body = data[4 + 4 * ndim :]
    if len(body) < count * dtype.itemsize:
        raise UserError(f"--data-dir: {path} is truncated ({len(body)} bytes of data, header says "
                        f"{count * dtype.itemsize})")
    return np.frombuffer(body, dtype=dtype, count=count).reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(data_dir: str | Path, download: bool = False, mirror: str = "") -> Dataset:
    """MNIST from ``<data_dir>/MNIST/raw``; missing files are downloaded first when ``download``."""
    folder = Path(data_dir) / "MNIST" / "raw"
    paths = {k: _find(folder, v) for k, v in MNIST_FILES.items()}
    missing = [MNIST_FILES[k] for k, p in paths.items() if p is None]
    if missing and download:
        download_dataset("mnist", data_dir, mirror)
        paths = {k: _find(folder, v) for k, v in MNIST_FILES.items()}
        missing = [MNIST_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise UserError(f"--data-dir: MNIST not found: put the four uncompressed IDX files "
                        f"({', '.join(MNIST_FILES.values())}) in {folder}/ (missing: {', '.join(missing)}; "
                        f"{_HOSTS['mnist']}){_off(download)}")
    return _load_mnist_cached(*(str(paths[k]) for k in MNIST_FILES), *(paths[k].stat().st_mtime for k in MNIST_FILES))


@functools.lru_cache(maxsize=2)
def _load_mnist_cached(tri, trl, tei, tel, *_mtimes) -> Dataset:
    arrays = {}
    for key, p in zip(MNIST_FILES, (tri, trl, tei, tel)):
        arrays[key] = read_idx(Path(p))
    for split in ("train", "test"):
        xi, yi = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if xi.ndim != 3 or yi.ndim != 1 or len(xi) != len(yi):
            raise UserError(f"--data-dir: MNIST {split} files disagree: images {xi.shape}, labels {yi.shape}")
    tf = Normalize(1.0 / 255.0, (0.1307,), (0.3081,))

    def ds(split):
        x = torch.from_numpy(arrays[f"{split}_images"].astype(np.uint8)).unsqueeze(1)
        return ArrayDataset(x, torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64)), tf)

    return Dataset("mnist", ds("train"), ds("test"), 10, [str(c) for c in range(10)])


# ----------------------------------------------------------------------------- CIFAR (pickles)

CIFAR10_DIR, CIFAR100_DIR = "cifar-10-batches-py", "cifar-100-python"
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
CIFAR100_FILES = ["train", "test", "meta"]


def _unpickle(path: Path) -> dict[str, Any]:
    """The CIFAR pickles were written by Python 2: keys may be bytes; normalise them to str."""
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise UserError(f"--data-dir: {path} is not a CIFAR python pickle ({err})") from None
    if not isinstance(obj, dict):
        raise UserError(f"--data-dir: {path} does not hold a dict")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if "data" not in d or label_key not in d:
        raise UserError(f"--data-dir: {path} lacks 'data' or '{label_key}'")
    data = np.asarray(d["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"--data-dir: {path}: 'data' must be uint8 of shape (N, 3072), got {data.shape}")
    labels = np.asarray(d[label_key], dtype=np.int64)
    if len(labels) != len(data):
        raise UserError(f"--data-dir: {path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def _missing(folder: Path, files: list[str]) -> list[str]:
    return [f for f in files if not (folder / f).is_file()]


def _check_files(folder: Path, files: list[str], what: str, download: bool = False) -> None:
    missing = _missing(folder, files)
    if missing:
        raise UserError(f"--data-dir: {what} not found: put the python-pickle files ({', '.join(files)}) in "
                        f"{folder}/ (the 'python version' archive from https://www.cs.toronto.edu/~kriz/cifar.html, "
                        f"extracted; missing: {', '.join(missing)}){_off(download)}")


def _off(download: bool) -> str:
    return "" if download else "; downloads are off (--no-download)"


def _names(meta: dict, key: str) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(key, [])]


def load_cifar10(data_dir: str | Path, download: bool = False, mirror: str = "") -> Dataset:
    """CIFAR-10 from ``<data_dir>/cifar-10-batches-py``; downloaded first when missing and ``download``."""
    folder = Path(data_dir) / CIFAR10_DIR
    if download and _missing(folder, CIFAR10_FILES):
        download_dataset("cifar10", data_dir, mirror)
    return _load_cached(folder, CIFAR10_FILES, "CIFAR-10", _read_cifar10, download)


def load_cifar100(data_dir: str | Path, download: bool = False, mirror: str = "") -> Dataset:
    """CIFAR-100 from ``<data_dir>/cifar-100-python``; downloaded first when missing and ``download``."""
    folder = Path(data_dir) / CIFAR100_DIR
    if download and _missing(folder, CIFAR100_FILES):
        download_dataset("cifar100", data_dir, mirror)
    return _load_cached(folder, CIFAR100_FILES, "CIFAR-100", _read_cifar100, download)


def _load_cached(folder: Path, files: list[str], what: str, read, download: bool = False) -> Dataset:
    """Check the files, then read them once per (folder, newest file time): a rewritten file is re-read."""
    _check_files(folder, files, what, download)
    return _read_cached(read, str(folder), max((folder / f).stat().st_mtime for f in files))


@functools.lru_cache(maxsize=4)
def _read_cached(read, folder: str, _mtime: float) -> Dataset:
    return read(Path(folder))


def _read_cifar10(folder: Path) -> Dataset:
    parts = [_cifar_arrays(folder / f"data_batch_{i}", "labels") for i in range(1, 6)]
    xtr, ytr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    xte, yte = _cifar_arrays(folder / "test_batch", "labels")
    names = _names(_unpickle(folder / "batches.meta"), "label_names") or [str(c) for c in range(10)]
    tf = Normalize(1.0 / 255.0, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615))
    return _cifar_dataset("cifar10", xtr, ytr, xte, yte, 10, names, tf)


def _read_cifar100(folder: Path) -> Dataset:
    xtr, ytr = _cifar_arrays(folder / "train", "fine_labels")
    xte, yte = _cifar_arrays(folder / "test", "fine_labels")
    names = _names(_unpickle(folder / "meta"), "fine_label_names") or [str(c) for c in range(100)]
    tf = Normalize(1.0 / 255.0, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    return _cifar_dataset("cifar100", xtr, ytr, xte, yte, 100, names, tf)


def _cifar_dataset(name, xtr, ytr, xte, yte, num_classes, names, tf) -> Dataset:
    for y in (ytr, yte):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise UserError(f"--data-dir: {name} labels must be in 0..{num_classes - 1}, got {y.min()}..{y.max()}")
    return Dataset(name, ArrayDataset(torch.from_numpy(xtr.copy()), torch.from_numpy(ytr), tf),
                   ArrayDataset(torch.from_numpy(xte.copy()), torch.from_numpy(yte), tf), num_classes, names)


# ----------------------------------------------------------------------------- by name


def load_dataset(name: str, data_dir: str | Path = "data", max_train_samples: int = 0, download: bool = False,
                 mirror: str = "") -> Dataset:
    """Load ``name`` (``--dataset``); ``max_train_samples`` > 0 keeps a fixed subset of the training set
    (the first N of a permutation drawn with seed 0, independent of ``--seed``). ``download``: fetch a
    missing CIFAR/MNIST first (:func:`download_dataset`; off by default in this Python call, on by
    default for the scenarios, whose ``--download`` option it is)."""
    if name == "digits":
        ds = load_digits()
    elif name == "mnist":
        ds = load_mnist(data_dir, download, mirror)
    elif name == "cifar10":
        ds = load_cifar10(data_dir, download, mirror)
    elif name == "cifar100":
        ds = load_cifar100(data_dir, download, mirror)
    else:
        raise UserError(f"--dataset: unknown dataset '{name}'; accepted: {', '.join(DATASETS)}")
    if max_train_samples < 0:
        raise UserError(f"--max-train-samples: must be >= 0, got {max_train_samples}")
    if max_train_samples and max_train_samples < len(ds.train):
        keep = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(0))[:max_train_samples]
        ds = Dataset(ds.name, ds.train.subset(keep.sort().values), ds.test, ds.num_classes, ds.class_names)
    return ds


def load_for(cfg, name: str) -> Dataset:
    """``load_dataset`` with a scenario's :class:`DataOptions` (``--data-dir``, ``--max-train-samples``,
    ``--download``, ``--data-mirror``)."""
    return load_dataset(name, cfg.data_dir, cfg.max_train_samples, download=cfg.download, mirror=cfg.data_mirror)


# ----------------------------------------------------------------------------- downloads

# The archives each dataset downloads and their MD5 checksums: the values of torchvision 0.29's
# ``CIFAR10.tgz_md5``, ``CIFAR100.tgz_md5`` and ``MNIST.resources`` (tests/test_datasets_download.py
# checks they still agree). ``download_dataset`` hands these to torchvision's classes, whose
# ``check_integrity`` verifies every archive; a test serving tiny archives puts their checksums here.
CHECKSUMS: dict[str, dict[str, str]] = {
    "cifar10": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    "cifar100": {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
}
_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "mnist": "MNIST"}
_HOSTS = {  # where each dataset comes from without --data-mirror (torchvision's own URLs)
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
    "cifar100": "https://www.cs.toronto.edu/~kriz/",
    "mnist": "the .gz files from https://ossci-datasets.s3.amazonaws.com/mnist/, decompressed",
}


def _sources(name: str, mirror: str) -> list[str]:
    """The base URLs tried in order, each ending with '/'."""
    if mirror:
        return [mirror.rstrip("/") + "/"]
    if name == "mnist":
        from torchvision.datasets import MNIST

        return list(MNIST.mirrors)
    return [_HOSTS[name]]


def _downloader(name: str, root: Path, bases: list[str]):
    """An instance of torchvision's dataset class for ``name`` that downloads into ``root`` from ``bases``
    with the checksums of :data:`CHECKSUMS`; only its ``download()`` is used (crl reads the files itself)."""
    from torchvision import datasets as tvd

    if name == "mnist":
        class MNIST(tvd.MNIST):  # the class name is torchvision's folder name: <root>/MNIST/raw
            mirrors = bases
            resources = list(CHECKSUMS["mnist"].items())

            def __init__(self, root):  # noqa: D107  (no loading: download() only)
                self.root = str(root)

        return MNIST(root)
    base = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    (archive, md5), = CHECKSUMS[name].items()

    class CIFAR(base):
        filename, tgz_md5, url = archive, md5, bases[0] + archive

        def __init__(self, root):  # noqa: D107
            self.root = str(root)

    return CIFAR(root)


def _why(err: BaseException) -> str:
    """One line from torchvision's / urllib's error."""
    import urllib.error

    if isinstance(err, urllib.error.HTTPError):
        text = f"HTTP {err.code} {err.reason} at {err.url}"
    elif isinstance(err, urllib.error.URLError):
        text = f"cannot reach the server ({err.reason})"
    else:
        text = " ".join(str(err).split())
    return text.replace("File not found or corrupted.", "MD5 checksum mismatch (a corrupted or interrupted "
                                                        "transfer, or another file)")


def download_dataset(name: str, data_dir: str | Path, mirror: str = "") -> Path:
    """Download ``name`` (cifar10, cifar100, mnist) into ``data_dir`` in the layout the loaders read.

    torchvision's ``download()`` fetches each archive of :data:`CHECKSUMS` (``<base>/<archive>``, ``base``
    the torchvision URL or ``mirror``) with a tqdm progress bar, checks its MD5 and extracts it, all inside
    a fresh staging folder ``<data_dir>/.download-<name>-*``. Only when that succeeded are the extracted
    files moved (each one with an atomic rename) into ``cifar-10-batches-py/``, ``cifar-100-python/`` or
    ``MNIST/raw/``. Any failure removes the staging folder (and ``data_dir`` when this call created it)
    and raises one :class:`UserError`. Returns the dataset's folder."""
    root = Path(data_dir)
    bases = _sources(name, mirror)
    created = not root.exists()
    folder = root / {"cifar10": CIFAR10_DIR, "cifar100": CIFAR100_DIR, "mnist": "MNIST/raw"}[name]
    staging = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".download-{name}-", dir=root))
        print(f"downloading {_TITLES[name]} from {bases[0]} into {folder}", file=sys.stderr)
        _downloader(name, staging, bases).download()
        extracted = staging / folder.relative_to(root)
        wanted = CIFAR10_FILES if name == "cifar10" else CIFAR100_FILES if name == "cifar100" else \
            list(MNIST_FILES.values())
        missing = _missing(extracted, wanted)
        if missing:
            raise RuntimeError(f"the archive lacks {', '.join(missing)}")
        folder.mkdir(parents=True, exist_ok=True)
        for f in wanted:
            os.replace(extracted / f, folder / f)
    except Exception as err:  # noqa: BLE001  (network, checksum, archive: all one line for the user)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
            staging = None
        if created:
            shutil.rmtree(root, ignore_errors=True)
        files = ", ".join(CHECKSUMS[name])
        by_hand = (f"put the four IDX files ({', '.join(MNIST_FILES.values())}; uncompressed or .gz) in {folder}/"
                   if name == "mnist" else
                   f"extract {files} from {_HOSTS[name]} so that its files are in {folder}/")
        raise UserError(f"--data-dir: downloading {_TITLES[name]} from {bases[-1] if len(bases) == 1 else ', '.join(bases)} "
                        f"failed: {_why(err)}; nothing was written; {by_hand} (or give --data-mirror URL)") from None
    finally:  # also on Ctrl-C: no staging folder is left behind
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return folder
