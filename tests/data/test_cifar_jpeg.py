"""cifar10_jpeg: the JPEG copy of CIFAR-10 read from its tar.gz in place, on small archives built here."""

from __future__ import annotations

import dataclasses
import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dla.config import DataConfig
from dla.data import cifar_jpeg
from dla.data.files import Checksum, DataError, file_digest
from dla.data.registry import LoadContext, RemoteFile, get_dataset
from dla.data.splits import load_splits

CLASSES = cifar_jpeg.CLASSES
PER_CLASS = {"train": 3, "test": 2}


def _jpeg(seed: int) -> tuple[bytes, np.ndarray]:
    """A 32x32 JPEG of smooth colours and the pixels it decodes to."""
    g = np.random.default_rng(seed)
    base = g.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
    img = Image.fromarray(base).resize((32, 32), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    return data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE,
         link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def build_archive(path: Path, extra: list[tuple[str, bytes | None, bytes, str]] = (),
                  per_class: dict[str, int] = PER_CLASS) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Write a CIFAR-10-JPEG-layout .tar.gz; return each split's (label, pixels) in the loader's order."""
    expected: dict[str, list[tuple[int, int, np.ndarray]]] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for split, n in per_class.items():
            _add(tar, split, kind=tarfile.DIRTYPE)
            for c, cls in enumerate(CLASSES):
                _add(tar, f"{split}/{cls}", kind=tarfile.DIRTYPE)
                for k in range(n):
                    data, pixels = _jpeg(hash((split, c, k)) % 2**32)
                    _add(tar, f"{split}/{cls}/{k:04d}.jpg", data)
                    expected.setdefault(split, []).append((k, c, pixels))
        for name, data, kind, link in extra:
            _add(tar, name, data, kind, link)
    return {s: [(c, p) for _, c, p in sorted(items, key=lambda t: (t[0], t[1]))] for s, items in expected.items()}


@pytest.fixture
def archive_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """A data root holding a small archive, with the registry's pinned sha256 set to that archive's."""
    root = tmp_path / "root"
    expected = build_archive(root / "cifar10_jpeg" / "cifar10-jpeg.tar.gz")
    monkeypatch.setenv("DLA_CACHE", str(tmp_path / "cache"))
    pin(monkeypatch, root / "cifar10_jpeg" / "cifar10-jpeg.tar.gz")
    return root, expected


def pin(monkeypatch: pytest.MonkeyPatch, archive: Path) -> None:
    spec = get_dataset("cifar10_jpeg")
    checksum = Checksum("sha256", file_digest(archive, "sha256"), of_file=True)
    monkeypatch.setattr(spec, "files", (dataclasses.replace(spec.files[0], checksum=checksum),))


def load(root: Path, train: bool = True, **kw) -> object:
    return get_dataset("cifar10_jpeg").load(LoadContext(root=root, name="cifar10_jpeg", **kw), train)


def test_tensors_labels_and_order(archive_root: tuple[Path, dict]) -> None:
    root, expected = archive_root
    for split, train in (("train", True), ("test", False)):
        data = load(root, train)
        assert data.x.dtype == torch.uint8 and data.x.shape == (10 * PER_CLASS[split], 3, 32, 32)
        assert data.classes == list(CLASSES)
        # Round-robin over classes: image 0 of every class, then image 1, ...
        assert data.y.tolist() == [c for c, _ in expected[split]]
        assert data.y[:10].tolist() == list(range(10))
        for i, (_, pixels) in enumerate(expected[split]):
            assert torch.equal(data.x[i], torch.from_numpy(pixels.copy()).permute(2, 0, 1))


def test_registry_pins_the_manifest_hash() -> None:
    (archive,) = get_dataset("cifar10_jpeg").files
    assert archive.checksum == Checksum("sha256", cifar_jpeg.SHA256, of_file=True)
    assert archive.path == "cifar10_jpeg/cifar10-jpeg.tar.gz"
    assert "JPEG" in get_dataset("cifar10_jpeg").source


def test_grey_and_resized(archive_root: tuple[Path, dict]) -> None:
    root, _ = archive_root
    assert load(root, channels=1).x.shape == (30, 1, 32, 32)
    assert load(root, image_size=16).x.shape == (30, 3, 16, 16)


def test_cache_reused_then_rebuilt(archive_root: tuple[Path, dict], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    root, _ = archive_root
    first = load(root)
    (entry,) = (tmp_path / "cache").iterdir()
    calls = []
    real = cifar_jpeg.decode_archive
    monkeypatch.setattr(cifar_jpeg, "decode_archive", lambda *a: calls.append(a) or real(*a))
    assert torch.equal(load(root).x, first.x) and not calls  # a hit decodes nothing
    raw = bytearray((entry / "train_x.npy").read_bytes())
    raw[-1] ^= 0xFF  # one flipped pixel: the digest no longer matches
    (entry / "train_x.npy").write_bytes(bytes(raw))
    assert torch.equal(load(root).x, first.x) and len(calls) == 1
    assert "corrupt" in capsys.readouterr().err


def test_cache_off_writes_nothing(archive_root: tuple[Path, dict], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = archive_root
    monkeypatch.setenv("DLA_CACHE", "off")
    assert len(load(root)) == 30
    assert not (tmp_path / "cache").exists()


def test_checksum_mismatch_is_one_line(archive_root: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = archive_root
    spec = get_dataset("cifar10_jpeg")
    monkeypatch.setattr(spec, "files", (RemoteFile(spec.files[0].path, Checksum("sha256", "0" * 64, True)),))
    with pytest.raises(DataError, match="failed its sha256 check") as err:
        load(root)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("member", "match"), [
    (("../evil.jpg", b"x", tarfile.REGTYPE, ""), "unexpected member"),
    (("train/airplane/../../x.jpg", b"x", tarfile.REGTYPE, ""), "unexpected member"),
    (("notes.txt", b"hello", tarfile.REGTYPE, ""), "unexpected member"),
    (("train/airplane/9999.jpg", None, tarfile.SYMTYPE, "/etc/passwd"), "link or special file"),
    (("train/airplane/9998.jpg", None, tarfile.LNKTYPE, "train/airplane/0000.jpg"), "link or special file"),
    (("train/airplane/9997.jpg", b"not a jpeg at all", tarfile.REGTYPE, ""), "not a decodable image"),
    (("train/airplane/9996.jpg", b"\0" * (65 << 10), tarfile.REGTYPE, ""), "more than the"),
])
def test_hostile_members_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: tuple,
                                     match: str) -> None:
    archive = tmp_path / "root" / "cifar10_jpeg" / "cifar10-jpeg.tar.gz"
    build_archive(archive, extra=[member], per_class={"train": 1, "test": 1})
    pin(monkeypatch, archive)
    monkeypatch.setenv("DLA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=match) as err:
        load(tmp_path / "root")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing cached
    assert sorted(p.name for p in archive.parent.iterdir()) == ["cifar10-jpeg.tar.gz"]  # nothing extracted


def test_wrong_image_size_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, format="JPEG")
    archive = tmp_path / "root" / "cifar10_jpeg" / "cifar10-jpeg.tar.gz"
    build_archive(archive, extra=[("test/cat/0005.jpg", buf.getvalue(), tarfile.REGTYPE, "")],
                  per_class={"train": 1, "test": 1})
    pin(monkeypatch, archive)
    with pytest.raises(DataError, match="64x64 pixels, not the 32x32"):
        load(tmp_path / "root")


def test_truncated_archive_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "root" / "cifar10_jpeg" / "cifar10-jpeg.tar.gz"
    build_archive(archive)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    pin(monkeypatch, archive)
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load(tmp_path / "root")
    assert "\n" not in str(err.value)


def test_compression_bomb_stops_at_the_cap(tmp_path: Path) -> None:
    """A member header declaring a huge GNU long name would make tarfile read it all into memory; the capped
    stream stops it at the cap."""
    from dla.data.tar_images import tar_members

    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb") as gz:
        header = tarfile.TarInfo("././@LongLink")
        header.type = tarfile.GNUTYPE_LONGNAME
        header.size = 64 << 20
        gz.write(header.tobuf(format=tarfile.GNU_FORMAT))
        zeros = b"\0" * (1 << 20)
        for _ in range(64):
            gz.write(zeros)
    with pytest.raises(DataError, match="more than 8 MiB"):
        list(tar_members(bomb, lambda name: True, max_total=8 << 20))


def test_fallback_is_said_and_recorded(archive_root: tuple[Path, dict]) -> None:
    root, _ = archive_root
    cfg = DataConfig(name="cifar10", fallback="cifar10_jpeg", val_size=5)
    splits = load_splits(cfg, root, seed=0)
    assert splits.spec.name == "cifar10_jpeg" and len(splits.train) == 25
    with pytest.raises(DataError, match="cifar-10-batches-py"):  # without a fallback: the pickles' own error
        load_splits(DataConfig(name="cifar10", val_size=5), root, seed=0)


def test_fallback_prefers_the_original_when_present(tmp_path: Path) -> None:
    from dla.data.splits import resolve_name

    root = tmp_path / "root"
    for rf in get_dataset("cifar10").files:
        (root / rf.path).parent.mkdir(parents=True, exist_ok=True)
        (root / rf.path).write_bytes(b"")
    build_archive(root / "cifar10_jpeg" / "cifar10-jpeg.tar.gz", per_class={"train": 1, "test": 1})
    assert resolve_name(DataConfig(name="cifar10", fallback="cifar10_jpeg"), root) == "cifar10"


def test_real_archive_first_members(real_root: Path) -> None:
    """The first members of the real archive pass the checks and decode to 32x32 RGB (a second, not a decode of all)."""
    from dla.data.tar_images import decode_image, tar_members

    path = real_root / "cifar10_jpeg" / "cifar10-jpeg.tar.gz"
    if not path.is_file():
        pytest.skip(f"no {path}")
    members = tar_members(path, cifar_jpeg.accept)
    for _, (name, data) in zip(range(20), members, strict=False):
        assert decode_image(data, name, path, shape=(32, 32)).shape == (32, 32, 3)
    members.close()
