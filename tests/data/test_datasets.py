"""The registered datasets: real MNIST / Fashion-MNIST / CIFAR-10 sample, and byte-exact stand-ins for the rest.

Stand-in files are written in each dataset's original format (IDX, Python-2-era pickles, MATLAB .mat) under
tmp_path; the registry's checksums are pointed at them with the `set_checksums` fixture.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from PIL import Image

from dla.config import DataConfig
from dla.data import dataset_names, get_dataset, load_splits
from dla.data.cifar import load_pickle
from dla.data.files import Checksum
from dla.data.mnist import FASHION_CLASSES, parse_idx
from dla.data.registry import DATASETS, DatasetSpec, ImageSet, LoadContext, RemoteFile
from dla.errors import ConfigError, DataError

if TYPE_CHECKING:
    from conftest import LoopbackServer  # tests/data/conftest.py, reached through the `http_server` fixture

SetChecksums = Callable[[str, Path], DatasetSpec]
MNIST_FIRST_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
MNIST_TRAIN_HISTOGRAM = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def idx_reference(path: Path) -> np.ndarray:
    """An IDX decoder written from the format description, independent of dla.data.mnist.parse_idx."""
    raw = gzip.decompress(path.read_bytes())
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    assert (zero, dtype) == (0, 0x08)
    shape = struct.unpack(f">{ndim}I", raw[4: 4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=">u1").reshape(shape)


# --------------------------------------------------------------------------------------------------
# Registry


def test_registry_lists_the_builtin_datasets() -> None:
    names = dataset_names()
    for name in ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "noise", "imagefolder"):
        assert name in names
        assert get_dataset(name).name == name
    with pytest.raises(DataError, match="unknown dataset 'mnistt'") as exc:
        get_dataset("mnistt")
    assert "mnist" in one_line(exc)


def test_offline_missing_mnist_lists_expected_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLA_OFFLINE", "1")
    with pytest.raises(DataError) as exc:
        get_dataset("mnist").load(LoadContext(root=tmp_path, name="mnist"), True)
    msg = one_line(exc)
    assert "MNIST/raw/train-images-idx3-ubyte.gz" in msg
    assert "MNIST/raw/train-labels-idx1-ubyte.gz" in msg
    assert "t10k" not in msg  # only the files the train split needs
    assert "offline" in msg and str(tmp_path) in msg
    assert list(tmp_path.iterdir()) == []


def test_offline_missing_root_is_not_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLA_OFFLINE", "1")
    root = tmp_path / "does" / "not" / "exist"
    for name in ("fashion_mnist", "cifar10", "cifar100", "svhn"):
        spec = get_dataset(name)
        if any(Path(d).is_dir() for d in spec.system_dirs):
            continue  # installed system-wide: nothing is missing
        with pytest.raises(DataError, match=f"dataset '{name}' is missing") as exc:
            spec.load(LoadContext(root=root, name=name), False)
        one_line(exc)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST (real files)


@pytest.fixture(scope="module")
def mnist(real_root: Path, mnist_raw: Path) -> dict[str, ImageSet]:
    spec = get_dataset("mnist")
    ctx = LoadContext(root=real_root, name="mnist")
    return {"train": spec.load(ctx, True), "test": spec.load(ctx, False)}


def test_mnist_real(mnist: dict[str, ImageSet]) -> None:
    train, test = mnist["train"], mnist["test"]
    assert len(train) == 60000 and len(test) == 10000
    for s in (train, test):
        assert s.x.dtype == torch.uint8 and s.y.dtype == torch.int64
        assert s.x.shape[1:] == (1, 28, 28)
        assert s.classes == [str(i) for i in range(10)]
    assert train.x.shape == (60000, 1, 28, 28)
    assert train.y[:10].tolist() == MNIST_FIRST_LABELS
    assert torch.bincount(train.y, minlength=10).tolist() == MNIST_TRAIN_HISTOGRAM
    assert torch.bincount(test.y, minlength=10).tolist() == MNIST_TEST_HISTOGRAM
    assert int(train.x.max()) == 255 and int(train.x.min()) == 0


def test_mnist_matches_an_independent_idx_decoder(mnist: dict[str, ImageSet], mnist_raw: Path) -> None:
    images = idx_reference(mnist_raw / "t10k-images-idx3-ubyte.gz")
    labels = idx_reference(mnist_raw / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28)
    assert np.array_equal(mnist["test"].x[:, 0].numpy(), images)
    assert np.array_equal(mnist["test"].y.numpy(), labels.astype(np.int64))
    train_labels = idx_reference(mnist_raw / "train-labels-idx1-ubyte.gz")
    assert np.array_equal(mnist["train"].y.numpy(), train_labels.astype(np.int64))


def test_mnist_torchvision_layout_directly_under_root(tmp_path: Path, mnist_raw: Path,
                                                      mnist: dict[str, ImageSet]) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_NAMES:
        (raw / name).symlink_to(mnist_raw / name)  # links to the read-only originals
    ctx = LoadContext(root=tmp_path, name="mnist")
    for split in ("train", "test"):
        s = get_dataset("mnist").load(ctx, split == "train")
        assert torch.equal(s.x, mnist[split].x) and torch.equal(s.y, mnist[split].y)
    assert sorted(p.name for p in raw.iterdir()) == sorted(IDX_NAMES)  # nothing added


def test_fashion_mnist_from_the_system_folder(tmp_path: Path, fashion_dir: Path) -> None:
    spec = get_dataset("fashion_mnist")
    assert str(fashion_dir) in spec.system_dirs
    ctx = LoadContext(root=tmp_path, name="fashion_mnist")
    train, test = spec.load(ctx, True), spec.load(ctx, False)
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert train.classes[0] == "T-shirt/top" and train.classes == FASHION_CLASSES and len(train.classes) == 10
    # Fashion-MNIST is balanced: 6,000 / 1,000 of each class.
    assert torch.bincount(train.y, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(test.y, minlength=10).tolist() == [1000] * 10
    assert np.array_equal(test.x[:, 0].numpy(), idx_reference(fashion_dir / "t10k-images-idx3-ubyte.gz"))
    assert list(tmp_path.iterdir()) == []


def test_corrupted_mnist_copy_fails_its_checksum(tmp_path: Path, mnist_raw: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte.gz").symlink_to(mnist_raw / "t10k-images-idx3-ubyte.gz")
    labels = bytearray(gzip.decompress((mnist_raw / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[8 + 123] = (labels[8 + 123] + 1) % 10  # still a valid IDX file, one label changed
    bad = raw / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(bytes(labels)))
    with pytest.raises(DataError, match="failed its sha256 check") as exc:
        get_dataset("mnist").load(LoadContext(root=tmp_path, name="mnist"), False)
    assert str(bad) in one_line(exc)


def test_parse_idx_rejects_bad_files() -> None:
    good = struct.pack(">HBB2I", 0, 8, 2, 2, 3) + bytes(range(6))
    assert parse_idx(good, "g").tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(DataError, match="not an unsigned-byte IDX file"):
        parse_idx(struct.pack(">HBB", 0, 0x0D, 1) + bytes(8), "floats")  # 0x0D = float32
    with pytest.raises(DataError, match="truncated"):
        parse_idx(good[:-1], "short")
    with pytest.raises(DataError):
        parse_idx(b"\x00\x00", "tiny")


# --------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 stand-ins


def py2_pickle(obj: Any) -> bytes:
    """Pickle the way the published CIFAR files were written (Python 2, protocol 2).

    Strings are py2 `str` (BINSTRING), arrays go through numpy.core.multiarray._reconstruct with their data
    as a py2 string. Written by hand from the pickle opcodes, so it does not depend on this Python's pickler.
    """
    out = bytearray(b"\x80\x02")

    def string(b: bytes) -> None:
        out.extend(b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b)

    def put(o: Any) -> None:
        if isinstance(o, str):
            string(o.encode("latin1"))
        elif isinstance(o, bytes):
            string(o)
        elif o is None:
            out.extend(b"N")
        elif isinstance(o, bool):
            out.extend(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            out.extend(b"J" + struct.pack("<i", o))
        elif isinstance(o, list):
            out.extend(b"](")
            for v in o:
                put(v)
            out.extend(b"e")
        elif isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                put(k)
                put(v)
            out.extend(b"u")
        elif isinstance(o, np.ndarray):
            assert o.dtype == np.uint8 and o.flags.c_contiguous
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            put(0)
            out.extend(b"\x85")  # TUPLE1: shape (0,)
            put("b")
            out.extend(b"\x87R(")  # TUPLE3, REDUCE, then MARK for the state tuple
            put(1)
            out.extend(b"(")
            for d in o.shape:
                put(int(d))
            out.extend(b"tcnumpy\ndtype\n")
            put("u1")
            out.extend(b"\x89\x88\x87R(")  # dtype('u1', False, True), then its state
            for v in (3, "|", None, None, None, -1, -1, 0):
                put(v)
            out.extend(b"tb\x89")  # BUILD the dtype; fortran_order = False
            put(o.tobytes())
            out.extend(b"tb")  # BUILD the array
        else:
            raise TypeError(type(o))

    put(obj)
    out.extend(b".")
    return bytes(out)


def test_py2_pickle_writer_matches_the_format() -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    blob = py2_pickle({"data": arr, "labels": [1, 2, 3], "batch_label": "x"})
    obj = pickle.loads(blob, encoding="latin1")  # the stock unpickler agrees on what the bytes mean
    assert np.array_equal(obj["data"], arr) and obj["labels"] == [1, 2, 3]
    assert load_pickle(blob, "b")["labels"] == [1, 2, 3]


def cifar_rows(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    rows[0] = 0
    rows[0, :1024] = 255  # image 0: pure red
    return rows


def write_cifar10(root: Path, n: int = 3, py2: bool = False) -> dict[str, Any]:
    """cifar-10-batches-py/ with five train batches, a test batch and batches.meta; returns what went in."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name: str, obj: dict[str, Any]) -> None:
        if py2:  # as published: py2 str keys
            (folder / name).write_bytes(py2_pickle(obj))
        else:  # as a Python 3 pickler writes a dict with bytes keys
            (folder / name).write_bytes(pickle.dumps({k.encode(): v for k, v in obj.items()}, protocol=4))

    train_x, train_y = [], []
    for i in range(1, 6):
        x, y = cifar_rows(n, seed=i), [(i + j) % 10 for j in range(n)]
        dump(f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": y, "data": x,
                                 "filenames": [f"f{i}_{j}.png" for j in range(n)]})
        train_x.append(x)
        train_y += y
    test_x, test_y = cifar_rows(n + 1, seed=99), list(range(n + 1))
    dump("test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_y, "data": test_x})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    dump("batches.meta", {"label_names": names, "num_cases_per_batch": n, "num_vis": 3072})
    return {"train_x": np.concatenate(train_x), "train_y": train_y, "test_x": test_x, "test_y": test_y,
            "names": names}


def check_cifar(s: ImageSet, rows: np.ndarray, labels: list[int], names: list[str]) -> None:
    n = rows.shape[0]
    assert s.x.shape == (n, 3, 32, 32) and s.x.dtype == torch.uint8
    assert s.y.dtype == torch.int64 and s.y.tolist() == labels
    assert s.classes == names
    # Channel order: a row is 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32.
    assert bool((s.x[0, 0] == 255).all()) and bool((s.x[0, 1:] == 0).all())
    for i in range(n):
        for c, r, col in ((0, 0, 0), (1, 5, 7), (2, 31, 30), (2, 0, 31), (1, 31, 0)):
            assert int(s.x[i, c, r, col]) == int(rows[i, c * 1024 + r * 32 + col])


@pytest.mark.parametrize("py2", [True, False], ids=["py2-pickles", "py3-pickles"])
def test_cifar10_standin(tmp_path: Path, set_checksums: SetChecksums, py2: bool) -> None:
    ref = write_cifar10(tmp_path, n=3, py2=py2)
    set_checksums("cifar10", tmp_path)
    ctx = LoadContext(root=tmp_path, name="cifar10")
    check_cifar(get_dataset("cifar10").load(ctx, True), ref["train_x"], ref["train_y"], ref["names"])
    check_cifar(get_dataset("cifar10").load(ctx, False), ref["test_x"], ref["test_y"], ref["names"])


def test_cifar100_standin(tmp_path: Path, set_checksums: SetChecksums) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class{i:03d}" for i in range(100)]
    train_x, test_x = cifar_rows(5, seed=1), cifar_rows(2, seed=2)
    train_y, test_y = [99, 0, 42, 7, 3], [5, 98]
    (folder / "train").write_bytes(py2_pickle({"data": train_x, "fine_labels": train_y,
                                               "coarse_labels": [y // 5 for y in train_y]}))
    (folder / "test").write_bytes(pickle.dumps({b"data": test_x, b"fine_labels": test_y,
                                                b"coarse_labels": [y // 5 for y in test_y]}))
    (folder / "meta").write_bytes(py2_pickle({"fine_label_names": names,
                                              "coarse_label_names": [f"super{i}" for i in range(20)]}))
    set_checksums("cifar100", tmp_path)
    ctx = LoadContext(root=tmp_path, name="cifar100")
    check_cifar(get_dataset("cifar100").load(ctx, True), train_x, train_y, names)
    check_cifar(get_dataset("cifar100").load(ctx, False), test_x, test_y, names)


def test_cifar_published_checksums_are_enforced(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n=2)
    with pytest.raises(DataError, match="failed its md5 check") as exc:
        get_dataset("cifar10").load(LoadContext(root=tmp_path, name="cifar10"), False)
    assert "cifar-10-batches-py/batches.meta" in one_line(exc)


class _Payload:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.cmd,))


def test_malicious_cifar_pickle_is_refused_not_run(tmp_path: Path, set_checksums: SetChecksums) -> None:
    write_cifar10(tmp_path, n=2)
    marker = tmp_path / "pwned"
    evil = {b"label_names": [b"x"] * 10, b"num_vis": _Payload(f"touch {marker}")}
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(pickle.dumps(evil, protocol=2))
    set_checksums("cifar10", tmp_path)  # it passes the checksum: only the unpickler stands in the way
    with pytest.raises(DataError, match="not allowed") as exc:
        get_dataset("cifar10").load(LoadContext(root=tmp_path, name="cifar10"), True)
    assert "batches.meta" in one_line(exc)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps(_Payload("true")),
    b"cbuiltins\neval\n(S'1+1'\ntR.",
    b"cposix\nsystem\n(S'true'\ntR.",
    b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93.",
])
def test_load_pickle_refuses_globals(payload: bytes) -> None:
    with pytest.raises(DataError, match="is not a readable CIFAR pickle"):
        load_pickle(payload, "evil")


def test_load_pickle_wants_a_dict() -> None:
    with pytest.raises(DataError, match="expected a dict"):
        load_pickle(pickle.dumps([1, 2, 3]), "list")
    with pytest.raises(DataError, match="not a readable CIFAR pickle"):
        load_pickle(b"garbage", "garbage")


def test_cifar_wrong_layout_is_a_data_error(tmp_path: Path, set_checksums: SetChecksums) -> None:
    write_cifar10(tmp_path, n=2)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(
        py2_pickle({"data": np.zeros((2, 3000), np.uint8), "labels": [0, 1]}))
    set_checksums("cifar10", tmp_path)
    with pytest.raises(DataError, match="unexpected layout"):
        get_dataset("cifar10").load(LoadContext(root=tmp_path, name="cifar10"), False)


def _serve_cifar10_archive(tmp_path: Path, server: LoopbackServer, set_checksums: SetChecksums,
                           monkeypatch: pytest.MonkeyPatch, members: Callable[[tarfile.TarFile], None] | None = None,
                           ) -> tuple[DatasetSpec, dict[str, Any], Path]:
    staging = tmp_path / "staging"
    ref = write_cifar10(staging, n=2)
    archive = server.root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        if members is not None:
            members(tar)
    spec = set_checksums("cifar10", staging)
    assert spec.archive is not None
    # files.download checks the *decompressed* content of anything ending in .gz.
    content = Checksum("md5", hashlib.md5(gzip.decompress(archive.read_bytes())).hexdigest())
    monkeypatch.setattr(spec, "archive", RemoteFile(spec.archive.path, content, (server.url(archive.name),)))
    return spec, ref, archive


@pytest.mark.usefixtures("online")
def test_cifar10_archive_is_downloaded_and_unpacked(tmp_path: Path, http_server: LoopbackServer,
                                                    set_checksums: SetChecksums,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    spec, ref, archive = _serve_cifar10_archive(tmp_path, http_server, set_checksums, monkeypatch)
    root = tmp_path / "root"
    ctx = LoadContext(root=root, name="cifar10")
    check_cifar(spec.load(ctx, True), ref["train_x"], ref["train_y"], ref["names"])
    check_cifar(spec.load(ctx, False), ref["test_x"], ref["test_y"], ref["names"])
    assert [p for p, _ in http_server.requests] == ["/cifar-10-python.tar.gz"]  # downloaded once
    members = ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]
    assert all_files(root) == sorted(["cifar-10-batches-py", "cifar-10-python.tar.gz",
                                      *(f"cifar-10-batches-py/{m}" for m in members)])
    assert (root / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()


@pytest.mark.usefixtures("online")
def test_cifar10_archive_with_its_published_kind_of_checksum(tmp_path: Path, http_server: LoopbackServer,
                                                             set_checksums: SetChecksums,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    registered = get_dataset("cifar10").archive
    assert registered is not None and registered.checksum is not None
    spec, ref, archive = _serve_cifar10_archive(tmp_path, http_server, set_checksums, monkeypatch)
    assert spec.archive is not None
    # torchvision's and the CIFAR page's MD5 ("c58f30108f...") is that of the .tar.gz file as served: give the
    # served archive a checksum of that kind, in the registered Checksum (whatever fields a fix adds to it).
    published = dataclasses.replace(registered.checksum, hexdigest=hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(spec, "archive", dataclasses.replace(spec.archive, checksum=published))
    s = spec.load(LoadContext(root=tmp_path / "root", name="cifar10"), False)
    check_cifar(s, ref["test_x"], ref["test_y"], ref["names"])


@pytest.mark.usefixtures("online")
def test_cifar10_archive_path_traversal_is_refused(tmp_path: Path, http_server: LoopbackServer,
                                                   set_checksums: SetChecksums,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def evil(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))

    spec, _, _ = _serve_cifar10_archive(tmp_path, http_server, set_checksums, monkeypatch, evil)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="cannot unpack") as exc:
        spec.load(LoadContext(root=root, name="cifar10"), False)
    one_line(exc)
    assert not (root / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert all_files(root) == ["cifar-10-python.tar.gz"]  # no half-unpacked members, no staging folder


# --------------------------------------------------------------------------------------------------
# SVHN stand-in


def write_svhn(root: Path, n: int, seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # MATLAB layout (H, W, C, N)
    y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
    y[0, 0] = 10  # SVHN's label for the digit 0
    (root / "SVHN").mkdir(exist_ok=True)
    scipy.io.savemat(root / "SVHN" / f"{split}_32x32.mat", {"X": x, "y": y})
    return x, y


def test_svhn_standin(tmp_path: Path, set_checksums: SetChecksums) -> None:
    tx, ty = write_svhn(tmp_path, 7, 0, "train")
    ex, ey = write_svhn(tmp_path, 3, 1, "test")
    set_checksums("svhn", tmp_path)
    ctx = LoadContext(root=tmp_path, name="svhn")
    for train, x, y in ((True, tx, ty), (False, ex, ey)):
        s = get_dataset("svhn").load(ctx, train)
        n = x.shape[-1]
        assert s.x.shape == (n, 3, 32, 32) and s.x.dtype == torch.uint8 and s.x.is_contiguous()
        expected_y = [0 if int(v) == 10 else int(v) for v in y[:, 0]]
        assert s.y.tolist() == expected_y and s.y.dtype == torch.int64 and int(s.y[0]) == 0
        assert 10 not in s.y.tolist()
        for i in range(n):  # image i is X[:, :, :, i], channels first
            assert np.array_equal(s.x[i].numpy(), np.moveaxis(x[:, :, :, i], -1, 0))
        assert int(s.x[0, 2, 3, 5]) == int(x[3, 5, 2, 0])  # (row 3, column 5, blue) of image 0


def test_svhn_bad_mat_is_a_data_error(tmp_path: Path, set_checksums: SetChecksums) -> None:
    import scipy.io

    (tmp_path / "SVHN").mkdir()
    scipy.io.savemat(tmp_path / "SVHN" / "test_32x32.mat", {"images": np.zeros((2, 2), np.uint8)})
    set_checksums("svhn", tmp_path)
    with pytest.raises(DataError, match=r"not an SVHN \.mat file"):
        get_dataset("svhn").load(LoadContext(root=tmp_path, name="svhn"), False)


# --------------------------------------------------------------------------------------------------
# Noise


def test_noise_is_seeded_and_shaped() -> None:
    spec = get_dataset("noise")
    a = spec.load(LoadContext(root=Path("unused"), name="noise", image_size=8, channels=1, seed=3), True)
    b = spec.load(LoadContext(root=Path("unused"), name="noise", image_size=8, channels=1, seed=3), True)
    test = spec.load(LoadContext(root=Path("unused"), name="noise", image_size=8, channels=1, seed=3), False)
    other = spec.load(LoadContext(root=Path("unused"), name="noise", image_size=8, channels=1, seed=4), True)
    assert a.x.shape == (10000, 1, 8, 8) and test.x.shape == (2000, 1, 8, 8)
    assert a.x.dtype == torch.uint8 and a.y.dtype == torch.int64
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x[:2000], test.x)
    assert not torch.equal(a.x, other.x)
    assert set(a.y.tolist()) == set(range(10)) and len(a.classes) == 10
    assert int(a.x.min()) == 0 and int(a.x.max()) == 255
    default = spec.load(LoadContext(root=Path("unused"), name="noise"), False)
    assert default.x.shape == (2000, 3, 32, 32)
    assert not Path("unused").exists()


# --------------------------------------------------------------------------------------------------
# ImageFolder


def decode_all(folder: Path) -> tuple[Counter[bytes], Counter[str]]:
    """Every image under folder/<class>/ decoded with PIL directly, and the per-class file counts."""
    images: Counter[bytes] = Counter()
    per_class: Counter[str] = Counter()
    for f in folder.rglob("*.png"):
        with Image.open(f) as img:
            images[np.asarray(img.convert("RGB")).transpose(2, 0, 1).tobytes()] += 1
        per_class[f.parent.name] += 1
    return images, per_class


def test_imagefolder_cifar10_sample(cifar_sample: Path, real_root: Path) -> None:
    cfg = DataConfig(name="imagefolder", path=cifar_sample.name, val_size=20, workers=0)
    s = load_splits(cfg, real_root, seed=0)
    classes = sorted(p.name for p in (cifar_sample / "train").iterdir() if p.is_dir())
    assert s.classes == classes and classes[0] == "airplane" and len(classes) == 10
    assert (len(s.train), len(s.val), len(s.test)) == (140, 20, 40)  # no test/: 20% of 200 carved off
    for part in (s.train, s.val, s.test):
        assert part.x.shape[1:] == (3, 32, 32) and part.x.dtype == torch.uint8
        assert part.classes == classes
    images, per_class = decode_all(cifar_sample / "train")
    got = Counter(row.numpy().tobytes() for part in (s.train, s.val, s.test) for row in part.x)
    assert got == images  # every image exactly once, pixels as PIL decodes them
    labels = torch.cat([s.train.y, s.val.y, s.test.y])
    assert torch.bincount(labels, minlength=10).tolist() == [per_class[c] for c in classes]
    # Statistics come from the training images only.
    xf = s.train.x.double() / 255
    assert np.allclose(s.mean, xf.mean(dim=(0, 2, 3)).numpy(), atol=1e-5)
    assert np.allclose(s.std, xf.std(dim=(0, 2, 3)).numpy(), atol=1e-5)
    assert s.input_shape == (3, 32, 32)

    again = load_splits(cfg, real_root, seed=0)
    for a, b in ((s.train, again.train), (s.val, again.val), (s.test, again.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    other = load_splits(cfg, real_root, seed=1)
    assert not torch.equal(other.test.x, s.test.x)
    assert not torch.equal(other.val.x, s.val.x)
    # An absolute data.path ignores the root.
    absolute = load_splits(dataclasses.replace(cfg, path=str(cifar_sample)), Path("/nonexistent"), seed=0)
    assert torch.equal(absolute.test.x, s.test.x) and torch.equal(absolute.train.y, s.train.y)


def write_png(path: Path, value: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:] = value
    arr[0, 0] = (value[0] // 2, 7, 9)  # a corner pixel that pins the orientation
    Image.fromarray(arr).save(path)


def make_folder(root: Path, splits: dict[str, dict[str, int]]) -> None:
    """root/<split>/<class>/<i>.png; pixel value encodes (split, class, i)."""
    for si, (split, counts) in enumerate(splits.items()):
        for ci, (cls, n) in enumerate(counts.items()):
            for i in range(n):
                write_png(root / split / cls / f"{i}.png", (100 * si + 10 * ci + i, 50 + ci, 200))


def test_imagefolder_uses_the_test_folder(tmp_path: Path) -> None:
    make_folder(tmp_path / "ds", {"train": {"dog": 3, "cat": 2, "emu": 1}, "test": {"cat": 1, "dog": 2}})
    (tmp_path / "ds" / "train" / "cat" / "notes.txt").write_text("not an image")
    s = load_splits(DataConfig(name="imagefolder", path="ds", val_size=1, workers=0), tmp_path, seed=0)
    assert s.classes == ["cat", "dog", "emu"]
    assert (len(s.train), len(s.val), len(s.test)) == (5, 1, 3)
    # test/ images (red = 100 + ...) with the train folder's class indices; sorted file order within a class.
    assert s.test.y.tolist() == [0, 1, 1]
    assert [int(v) for v in s.test.x[:, 0, 1, 1]] == [100, 110, 111]
    assert s.test.x.shape == (3, 3, 6, 8)  # (N, C, H, W) of 8x6 (width x height) images
    assert s.test.x[:, :, 0, 0].tolist() == [[50, 7, 9], [55, 7, 9], [55, 7, 9]]
    assert sorted(torch.cat([s.train.y, s.val.y]).tolist()) == [0, 0, 1, 1, 1, 2]


def test_imagefolder_scan_keeps_sorted_path_order(tmp_path: Path) -> None:
    # Nested folders and names that sort differently as whole strings than part by part ('a-b/' < 'a/' as
    # strings, 'a' < 'a-b' as parts): the order, and so every seeded split, must stay what sorted(paths) gave.
    from dla.data.folder import scan

    names = ["b.png", "B.png", "a.png", "a/b.png", "a/a/z.png", "a-b/c.png", "a b.png", "10.png", "9.png",
             "x.PNG"]
    for name in names:
        write_png(tmp_path / "train" / "c" / name, (1, 2, 3))
    (tmp_path / "train" / "c" / "a" / "notes.txt").write_text("not an image")
    files, labels, classes = scan(tmp_path / "train")
    want = sorted(f for f in (tmp_path / "train" / "c").rglob("*") if f.is_file() and f.suffix != ".txt")
    assert files == want and len(files) == len(names) and labels == [0] * len(files) and classes == ["c"]


def test_imagefolder_val_folder_grey_and_resize(tmp_path: Path) -> None:
    make_folder(tmp_path / "ds", {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    ctx = LoadContext(root=tmp_path, name="imagefolder", path="ds", image_size=4, channels=1)
    test = get_dataset("imagefolder").load(ctx, False)
    assert test.x.shape == (2, 1, 4, 4) and test.y.tolist() == [0, 1]
    with Image.open(tmp_path / "ds" / "val" / "b" / "0.png") as img:
        ref = np.asarray(img.convert("L").resize((4, 4), Image.BILINEAR))
    assert np.array_equal(test.x[1, 0].numpy(), ref)


def test_imagefolder_errors(tmp_path: Path) -> None:
    spec = get_dataset("imagefolder")
    with pytest.raises(DataError, match=r"needs data\.path"):
        spec.load(LoadContext(root=tmp_path, name="imagefolder"), True)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="has no train/ folder"):
        spec.load(LoadContext(root=tmp_path, name="imagefolder", path="nothing"), True)
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        spec.load(LoadContext(root=tmp_path, name="imagefolder", path="empty"), True)
    write_png(tmp_path / "mixed" / "train" / "a" / "0.png", (1, 2, 3), (8, 8))
    write_png(tmp_path / "mixed" / "train" / "a" / "1.png", (1, 2, 3), (9, 8))
    with pytest.raises(DataError, match=r"differ in size.*data\.image_size") as exc:
        spec.load(LoadContext(root=tmp_path, name="imagefolder", path="mixed"), True)
    one_line(exc)
    resized = spec.load(LoadContext(root=tmp_path, name="imagefolder", path="mixed", image_size=5), True)
    assert resized.x.shape == (2, 3, 5, 5)
    write_png(tmp_path / "bad" / "train" / "a" / "0.png", (1, 2, 3))
    (tmp_path / "bad" / "train" / "a" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot decode image") as exc:
        spec.load(LoadContext(root=tmp_path, name="imagefolder", path="bad"), True)
    assert "1.png" in one_line(exc)


def test_imagefolder_errors_stay_one_line_with_workers(tmp_path: Path) -> None:
    write_png(tmp_path / "bad" / "train" / "a" / "0.png", (1, 2, 3))
    (tmp_path / "bad" / "train" / "a" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot decode image") as exc:
        get_dataset("imagefolder").load(LoadContext(root=tmp_path, name="imagefolder", path="bad", workers=1), True)
    one_line(exc)


# --------------------------------------------------------------------------------------------------
# Splits


@pytest.fixture(scope="module")
def mnist_splits(real_root: Path, mnist_raw: Path) -> Any:
    return load_splits(DataConfig(name="mnist", val_size=5000), real_root, seed=0)


def row_keys(s: ImageSet) -> list[bytes]:
    """One key per example: its pixels and label (MNIST's 60,000 training pairs are all distinct)."""
    x = s.x.reshape(len(s), -1).numpy()
    return [hashlib.blake2b(row.tobytes() + bytes([int(y)]), digest_size=16).digest()
            for row, y in zip(x, s.y.tolist(), strict=True)]


def test_mnist_splits(mnist_splits: Any, mnist: dict[str, ImageSet], real_root: Path) -> None:
    s = mnist_splits
    assert (len(s.train), len(s.val), len(s.test)) == (55000, 5000, 10000)
    assert torch.equal(s.test.x, mnist["test"].x) and torch.equal(s.test.y, mnist["test"].y)
    full = row_keys(mnist["train"])
    assert len(set(full)) == 60000
    train, val = row_keys(s.train), row_keys(s.val)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(full)
    # Sorted indices: both parts keep the original order (a subsequence of the full train set).
    position = {k: i for i, k in enumerate(full)}
    for part in (train, val):
        idx = [position[k] for k in part]
        assert idx == sorted(idx)
    assert s.mean == (0.1307,) and s.std == (0.3081,)
    assert s.classes == [str(i) for i in range(10)] and s.input_shape == (1, 28, 28)
    again = load_splits(DataConfig(name="mnist", val_size=5000), real_root, seed=0)
    assert torch.equal(again.val.x, s.val.x) and torch.equal(again.train.y, s.train.y)
    other = load_splits(DataConfig(name="mnist", val_size=5000), real_root, seed=1)
    assert set(row_keys(other.val)) != set(val)


@pytest.fixture
def tagged(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Register (for one test) a dataset 'tagged' whose image i holds the number i, to follow indices."""

    def register(n: int) -> None:
        def load(ctx: LoadContext, train: bool) -> ImageSet:
            base = 0 if train else 1_000_000
            x = (torch.arange(n) + base).reshape(n, 1, 1, 1)
            return ImageSet(x, torch.arange(n) % 3, ["a", "b", "c"])

        dataset_names()  # the built-in datasets first
        monkeypatch.setitem(DATASETS.entries, "tagged", DatasetSpec("tagged", "indices", load, (0.0,), (1.0,)))

    return register


def test_split_indices(tagged: Callable[[int], None]) -> None:
    tagged(1000)
    s = load_splits(DataConfig(name="tagged", val_size=300), Path("unused"), seed=5)
    train, val = s.train.x.flatten().tolist(), s.val.x.flatten().tolist()
    assert len(train) == 700 and len(val) == 300
    assert train == sorted(train) and val == sorted(val)
    assert sorted(train + val) == list(range(1000))
    assert s.val.y.tolist() == [i % 3 for i in val]
    assert s.test.x.flatten().tolist() == list(range(1_000_000, 1_001_000))
    other = load_splits(DataConfig(name="tagged", val_size=300), Path("unused"), seed=6)
    assert other.val.x.flatten().tolist() != val
    none = load_splits(DataConfig(name="tagged", val_size=0), Path("unused"), seed=5)
    assert none.train.x.flatten().tolist() == list(range(1000)) and len(none.val) == 0


def test_split_limits_take_the_first_examples(tagged: Callable[[int], None]) -> None:
    tagged(1000)
    s = load_splits(DataConfig(name="tagged", val_size=10, limit_train=50, limit_test=7), Path("unused"), seed=0)
    assert sorted(s.train.x.flatten().tolist() + s.val.x.flatten().tolist()) == list(range(50))
    assert s.test.x.flatten().tolist() == list(range(1_000_000, 1_000_007))


def test_val_size_must_leave_training_data(tagged: Callable[[int], None]) -> None:
    tagged(100)
    for val_size in (100, 101):
        with pytest.raises(ConfigError, match=r"data\.val_size") as exc:
            load_splits(DataConfig(name="tagged", val_size=val_size), Path("unused"), seed=0)
        assert "100" in one_line(exc)
    assert len(load_splits(DataConfig(name="tagged", val_size=99), Path("unused"), seed=0).train) == 1
    with pytest.raises(ConfigError, match=r"data\.val_size"):
        load_splits(DataConfig(name="tagged", val_size=20, limit_train=20), Path("unused"), seed=0)
