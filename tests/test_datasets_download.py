"""Datasets that download: torchvision's real download code against a local HTTP server on 127.0.0.1.

The server serves tiny archives in the real formats (CIFAR's ``cifar-10-python.tar.gz`` holding
``cifar-10-batches-py/`` pickles; MNIST's gzipped IDX files), built here from the files of
``_tiny_datasets``. Their MD5s go into ``scenarios.datasets.CHECKSUMS`` (the table that says which
checksum each archive must have); torchvision's ``check_integrity`` compares them with the bytes that
arrived. Nothing here reaches the internet: every URL is ``--data-mirror http://127.0.0.1:PORT/``.
"""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from _tiny_datasets import write_cifar10, write_mnist
from crl.cli import main
from scenarios import datasets
from scenarios.datasets import load_cifar10, load_mnist

FAST = ["--no-progress", "--metrics-every", "0", "--epochs", "1", "--batch-size", "8", "--mlp-hidden", "16"]


class _Server:
    """A threaded HTTP server of ``files`` (name -> bytes); names in ``cut`` are sent half, then the
    connection closes (an interrupted transfer: the Content-Length promises the whole file)."""

    def __init__(self, files: dict[str, bytes], cut: set[str] = frozenset()):
        self.files, self.cut, self.requests = files, set(cut), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802  (http.server's naming)
                name = self.path.lstrip("/")
                server.requests.append(name)
                if name not in server.files:
                    self.send_error(404, "File not found")
                    return
                body = server.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if name in server.cut else body)
                if name in server.cut:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _cifar10_archive(tmp: Path) -> tuple[bytes, dict]:
    """``cifar-10-python.tar.gz`` as the real one is laid out: ``cifar-10-batches-py/<files>``."""
    written = write_cifar10(tmp / "src")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return buf.getvalue(), written


def _mnist_archives(tmp: Path) -> tuple[dict[str, bytes], dict]:
    """The four gzipped IDX files, named as on the MNIST mirrors."""
    written = write_mnist(tmp / "src")
    raw = tmp / "src" / "MNIST" / "raw"
    return {f"{p.name}.gz": gzip.compress(p.read_bytes()) for p in sorted(raw.iterdir())}, written


def _left(data_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*")) if data_dir.exists() else []


def _run_cli(tmp_path, *argv) -> int:
    return main(["run", *argv, "--run-dir", str(tmp_path / "runs"), "--name", "r", *FAST])


def test_checksum_table_is_torchvisions():
    """The table the downloads check against holds torchvision's own archive checksums."""
    from torchvision.datasets import CIFAR10, CIFAR100, MNIST

    assert datasets.CHECKSUMS["cifar10"] == {CIFAR10.filename: CIFAR10.tgz_md5}
    assert datasets.CHECKSUMS["cifar100"] == {CIFAR100.filename: CIFAR100.tgz_md5}
    assert datasets.CHECKSUMS["mnist"] == dict(MNIST.resources)


def test_cifar10_downloads_through_the_cli_and_trains(tmp_path, monkeypatch, capsys):
    archive, written = _cifar10_archive(tmp_path)
    monkeypatch.setitem(datasets.CHECKSUMS, "cifar10", {"cifar-10-python.tar.gz": _md5(archive)})
    data = tmp_path / "data"
    with _Server({"cifar-10-python.tar.gz": archive}) as server:
        assert _run_cli(tmp_path, "split-cifar10", "--data-dir", str(data), "--data-mirror", server.url) == 0
    err = capsys.readouterr().err
    assert f"downloading CIFAR-10 from {server.url}" in err
    assert "cifar-10-python.tar.gz" in server.requests
    # the archive's folder layout, extracted; no archive or staging folder left
    assert _left(data) == ["cifar-10-batches-py"] + [f"cifar-10-batches-py/{f}" for f in sorted(datasets.CIFAR10_FILES)]
    ds = load_cifar10(data)  # what arrived is what was served
    assert torch.equal(ds.train.x, torch.from_numpy(np.concatenate(written["train_x"]).reshape(-1, 3, 32, 32)))
    (summary,) = (tmp_path / "runs").glob("*/*/r/summary.json")
    assert np.array(json.loads(summary.read_text())["eval_matrix"]).shape == (5, 5)
    # a second run finds the files: no request reaches a server
    with _Server({}) as again:
        ds2 = load_cifar10(data, download=True, mirror=again.url)
    assert again.requests == [] and torch.equal(ds2.test.y, ds.test.y)


def test_mnist_downloads_every_file_and_decompresses(tmp_path, monkeypatch):
    files, written = _mnist_archives(tmp_path)
    monkeypatch.setitem(datasets.CHECKSUMS, "mnist", {n: _md5(b) for n, b in files.items()})
    data = tmp_path / "data"
    with _Server(files) as server:
        ds = load_mnist(data, download=True, mirror=server.url.rstrip("/"))  # a mirror without the trailing '/'
    assert _left(data) == ["MNIST", "MNIST/raw"] + [f"MNIST/raw/{f}" for f in sorted(datasets.MNIST_FILES.values())]
    assert torch.equal(ds.train.x[:, 0], torch.from_numpy(written["train_x"]))
    assert ds.test.y.tolist() == written["t10k_y"].tolist()


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


def test_checksum_mismatch_is_one_error_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    archive, _ = _cifar10_archive(tmp_path)
    # the table expects other bytes than the server sends (e.g. a mirror holding a changed file)
    monkeypatch.setitem(datasets.CHECKSUMS, "cifar10", {"cifar-10-python.tar.gz": _md5(archive + b"x")})
    data = tmp_path / "data"
    with _Server({"cifar-10-python.tar.gz": archive}) as server:
        code = _run_cli(tmp_path, "split-cifar10", "--data-dir", str(data), "--data-mirror", server.url)
    assert code == 2
    line = _one_error_line(capsys)
    for needle in ("downloading CIFAR-10", "MD5 checksum mismatch", "cifar-10-python.tar.gz",
                   str(data / "cifar-10-batches-py"), "nothing was written"):
        assert needle in line, line
    assert not data.exists() and not (tmp_path / "runs").exists()


def test_checksum_mismatch_keeps_an_existing_data_dir_untouched(tmp_path, monkeypatch):
    files, _ = _mnist_archives(tmp_path)
    monkeypatch.setitem(datasets.CHECKSUMS, "mnist", {n: _md5(b) for n, b in files.items()})
    files["t10k-labels-idx1-ubyte.gz"] = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x00")  # the last one differs
    data = tmp_path / "data"
    (data / "other").mkdir(parents=True)
    with _Server(files) as server, pytest.raises(datasets.UserError, match="MD5 checksum mismatch"):
        load_mnist(data, download=True, mirror=server.url)
    assert _left(data) == ["other"]  # three good files were fetched, none is left as if MNIST were there


def test_mirror_without_the_file(tmp_path, capsys):
    data = tmp_path / "data"
    with _Server({}) as server:
        code = _run_cli(tmp_path, "split-mnist", "--data-dir", str(data), "--data-mirror", server.url)
    assert code == 2
    line = _one_error_line(capsys)
    assert "404" in line and "train-images-idx3-ubyte.gz" in line and str(data / "MNIST" / "raw") in line, line
    assert not data.exists() and not (tmp_path / "runs").exists()


def test_interrupted_transfer(tmp_path, monkeypatch, capsys):
    archive, _ = _cifar10_archive(tmp_path)
    monkeypatch.setitem(datasets.CHECKSUMS, "cifar10", {"cifar-10-python.tar.gz": _md5(archive)})
    data = tmp_path / "data"
    with _Server({"cifar-10-python.tar.gz": archive}, cut={"cifar-10-python.tar.gz"}) as server:
        code = _run_cli(tmp_path, "split-cifar10", "--data-dir", str(data), "--data-mirror", server.url)
    assert code == 2 and server.requests.count("cifar-10-python.tar.gz") >= 1
    assert "MD5 checksum mismatch" in _one_error_line(capsys)
    assert not data.exists() and not (tmp_path / "runs").exists()


def test_server_unreachable(tmp_path, capsys):
    with _Server({}) as server:
        url = server.url  # closed on exit: nothing listens on this port any more
    code = _run_cli(tmp_path, "split-cifar100", "--data-dir", str(tmp_path / "data"), "--data-mirror", url)
    assert code == 2
    line = _one_error_line(capsys)
    assert "cannot reach the server" in line and "cifar-100-python.tar.gz" in line, line
    assert not (tmp_path / "data").exists()


def test_no_download_asks_no_server(tmp_path, capsys):
    files, _ = _mnist_archives(tmp_path)
    with _Server(files) as server:
        code = _run_cli(tmp_path, "split-mnist", "--data-dir", str(tmp_path / "data"), "--data-mirror", server.url,
                        "--no-download")
    assert code == 2 and server.requests == []
    line = _one_error_line(capsys)
    assert "MNIST not found" in line and "--no-download" in line and str(tmp_path / "data" / "MNIST" / "raw") in line
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()
