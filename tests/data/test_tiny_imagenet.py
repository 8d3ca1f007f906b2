"""tiny_imagenet: Tiny-ImageNet-200's val/test archive read in place, on small archives built here with its layout."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dla.data import get_dataset
from dla.data.files import DataError, file_digest
from dla.data.registry import LoadContext
from dla.errors import ConfigError

from .tiny_archive import (
    ARCHIVE,
    GREY_TEST,
    GREY_VAL,
    N_TEST,
    N_VAL,
    TOP,
    WNIDS,
    members,
    pin_archive,
    val_labels,
    write_archive,
)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLA_CACHE", str(tmp_path / "cache"))  # never the user's cache, never the data root


@pytest.fixture
def accept_archive(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Pin the registry's sha256 to this test's archive (the loader checks it before anything else)."""
    return lambda path: pin_archive(monkeypatch, path)


def load(root: Path, train: bool, size: int = 0, channels: int = 0):
    return get_dataset("tiny_imagenet").load(LoadContext(root=root, name="tiny_imagenet", image_size=size,
                                                         channels=channels), train)


def _pil(data: bytes, mode: str = "RGB", size: int = 0) -> np.ndarray:
    """An independent decode: PIL, converted, resized as the loader promises; (C, H, W)."""
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert(mode)
        if size:
            im = im.resize((size, size), Image.BILINEAR)
        a = np.asarray(im)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def test_val_is_labelled_test_is_not_and_both_are_rgb(tmp_path: Path, accept_archive) -> None:
    accept_archive(write_archive(tmp_path, members()))
    val, test = load(tmp_path, True), load(tmp_path, False)
    assert val.x.shape == (N_VAL, 3, 64, 64) and test.x.shape == (N_TEST, 3, 64, 64)
    assert val.x.dtype == torch.uint8 and val.y.dtype == torch.int64
    assert val.y.tolist() == val_labels()  # the wnid's index in wnids.txt, row K = val_K.JPEG
    assert test.y.tolist() == [-1] * N_TEST  # unlabelled: no class index, so no accuracy can be computed
    assert val.classes == ["goldfish", "European fire salamander", "crane (n03444034)", "crane (n02123394)"]
    files = dict(members())
    for k in range(N_VAL):  # row K is val_K (the archive lists val_0, val_1, val_10, ...), decoded as PIL does
        assert np.array_equal(val.x[k].numpy(), _pil(files[f"{TOP}/val/images/val_{k}.JPEG"])), k
    for k in range(N_TEST):
        assert np.array_equal(test.x[k].numpy(), _pil(files[f"{TOP}/test/images/test_{k}.JPEG"])), k
    for x, grey in ((val.x, GREY_VAL), (test.x, GREY_TEST)):  # greyscale JPEGs become RGB with equal channels
        same = (x[:, 0] == x[:, 1]).flatten(1).all(1) & (x[:, 1] == x[:, 2]).flatten(1).all(1)
        assert set(torch.nonzero(same).flatten().tolist()) == grey
    # val and test are different images: no test image is among the val images
    assert not any(torch.equal(t, v) for t in test.x for v in val.x)


def test_resized_to_the_id_size_and_grey_on_request(tmp_path: Path, accept_archive) -> None:
    accept_archive(write_archive(tmp_path, members()))
    files = dict(members())
    small = load(tmp_path, False, size=32)
    assert small.x.shape == (N_TEST, 3, 32, 32)
    assert np.array_equal(small.x[3].numpy(), _pil(files[f"{TOP}/test/images/test_3.JPEG"], size=32))
    grey = load(tmp_path, True, size=28, channels=1)
    assert grey.x.shape == (N_VAL, 1, 28, 28)
    assert np.array_equal(grey.x[0].numpy(), _pil(files[f"{TOP}/val/images/val_0.JPEG"], "L", 28))


def test_decoded_once_then_read_from_the_cache(tmp_path: Path, accept_archive,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from dla.data import tiny_imagenet

    accept_archive(write_archive(tmp_path, members()))
    first = load(tmp_path, True, size=32)
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(entries) == 1 and entries[0].startswith("tiny_imagenet-")

    def no_decode(*a: object, **k: object) -> None:
        raise AssertionError("decoded again although the cache holds these settings")

    monkeypatch.setattr(tiny_imagenet, "decode_archive", no_decode)
    again, test = load(tmp_path, True, size=32), load(tmp_path, False, size=32)  # both splits from one entry
    assert torch.equal(again.x, first.x) and torch.equal(again.y, first.y) and again.classes == first.classes
    assert test.x.shape == (N_TEST, 3, 32, 32)
    with pytest.raises(AssertionError, match="decoded again"):
        load(tmp_path, True, size=16)  # other settings: another entry
    assert [p.name for p in (tmp_path / "tiny_imagenet").iterdir()] == [Path(ARCHIVE).name]  # nothing beside it


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def test_checksum_mismatch_is_one_line(tmp_path: Path) -> None:
    write_archive(tmp_path, members())  # not pinned: the release's sha256 is expected
    with pytest.raises(DataError, match="failed its sha256 check") as exc:
        load(tmp_path, True)
    assert "6931f365e489" in _one_line(exc)


def _symlink(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo(f"{TOP}/test/images/test_{N_TEST}.JPEG")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    tar.addfile(info)


def _hostile(kind: str) -> tuple[list[tuple[str, bytes | None]], Callable[[tarfile.TarFile], None] | None]:
    good = members()
    if kind == "traversal":
        return [*good, (f"{TOP}/../../evil.JPEG", b"x")], None
    if kind == "absolute":
        return [*good, ("/tmp/evil.JPEG", b"x")], None
    if kind == "symlink":
        return good, _symlink
    if kind == "not-an-image":
        return [(n, b"#!/bin/sh\necho hi\n" if n.endswith("val_3.JPEG") else d) for n, d in good], None
    if kind == "foreign-file":
        return [*good, (f"{TOP}/run.sh", b"echo hi")], None
    if kind == "wrong-size":
        other = io.BytesIO()
        Image.new("RGB", (32, 32)).save(other, "JPEG")
        return [(n, other.getvalue() if n.endswith("test_2.JPEG") else d) for n, d in good], None
    raise AssertionError(kind)


@pytest.mark.parametrize(("kind", "needle"), [
    ("traversal", "unexpected member"),
    ("absolute", "unexpected member"),
    ("symlink", "is a link or special file"),
    ("not-an-image", "'tiny-imagenet-200/val/images/val_3.JPEG' is not a decodable image"),
    ("foreign-file", "unexpected member 'tiny-imagenet-200/run.sh'"),
    ("wrong-size", "is 32x32 pixels, not the 64x64"),
])
def test_hostile_archives_are_one_line(tmp_path: Path, accept_archive, kind: str, needle: str) -> None:
    items, extra = _hostile(kind)
    accept_archive(write_archive(tmp_path, items, extra))
    with pytest.raises(DataError) as exc:
        load(tmp_path, False)
    assert needle in _one_line(exc)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing cached
    assert sorted(p.name for p in (tmp_path / "tiny_imagenet").iterdir()) == [Path(ARCHIVE).name]  # no extraction


def test_truncated_archive_is_one_line(tmp_path: Path, accept_archive) -> None:
    path = write_archive(tmp_path, members())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    accept_archive(path)
    with pytest.raises(DataError) as exc:
        load(tmp_path, True)
    assert f"{path} is truncated or corrupt" in _one_line(exc)


@pytest.mark.parametrize(("drop", "needle"), [
    ("val_annotations.txt", "has no tiny-imagenet-200/val/val_annotations.txt"),
    ("val_4.JPEG", "val_4.JPEG is missing"),
    ("wnids.txt", "has no tiny-imagenet-200/wnids.txt"),
])
def test_incomplete_archives_are_one_line(tmp_path: Path, accept_archive, drop: str, needle: str) -> None:
    accept_archive(write_archive(tmp_path, [(n, d) for n, d in members() if not n.endswith("/" + drop)]))
    with pytest.raises(DataError) as exc:
        load(tmp_path, True)
    assert needle in _one_line(exc)


def test_an_annotation_naming_an_unknown_class_is_one_line(tmp_path: Path, accept_archive) -> None:
    items = [(n, d.replace(WNIDS[1].encode(), b"n00000000") if n.endswith("val_annotations.txt") else d)
             for n, d in members()]
    accept_archive(write_archive(tmp_path, items))
    with pytest.raises(DataError) as exc:
        load(tmp_path, True)
    assert "val_annotations.txt line" in _one_line(exc)


def test_missing_archive_says_where_it_goes(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load(tmp_path, True)
    assert f"missing {ARCHIVE} under data root {tmp_path}" in _one_line(exc)


def test_registered_with_its_source_and_never_a_test_set(tmp_path: Path, accept_archive) -> None:
    from dla.config import DataConfig
    from dla.data import dataset_names, load_splits

    spec = get_dataset("tiny_imagenet")
    assert "tiny_imagenet" in dataset_names() and "val and test splits only" in spec.source
    assert spec.files[0].checksum.hexdigest == "6931f365e4891f7e015f2beac211114ff2f3262819f0f41887021f8142a5e18b"
    accept_archive(write_archive(tmp_path, members()))
    with pytest.raises(ConfigError, match="has an unlabelled test split") as exc:  # no accuracy on the test images
        load_splits(DataConfig(name="tiny_imagenet", val_size=2), tmp_path, 0)
    assert "--ood tiny_imagenet" in _one_line(exc)


def test_the_real_archive_matches_its_pin_and_its_first_image_decodes(real_root: Path) -> None:
    from dla.data.tar_images import decode_image, tar_members
    from dla.data.tiny_imagenet import SHA256, accept

    path = real_root / ARCHIVE
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    assert file_digest(path, "sha256") == SHA256
    name, data = next(tar_members(path, accept))  # streams only the archive's first few kB
    assert name == f"{TOP}/val/images/val_0.JPEG"
    assert decode_image(data, name, path, shape=(64, 64)).shape == (64, 64, 3)
