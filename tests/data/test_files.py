"""files.py: checksums over decompressed content, atomic writes, resumable downloads (loopback HTTP only)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dla.data.files import Checksum, atomic_write, download, file_digest, read_bytes, verify
from dla.data.registry import DatasetSpec, RemoteFile, get_dataset, locate
from dla.errors import DataError

if TYPE_CHECKING:
    from conftest import LoopbackServer  # tests/data/conftest.py, reached through the `http_server` fixture

PAYLOAD = bytes(range(256)) * 777 + b"tail"  # 198,916 bytes, not a multiple of anything in files.py


def sha256(data: bytes) -> Checksum:
    return Checksum("sha256", hashlib.sha256(data).hexdigest())


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------------------------------
# read_bytes / verify


def test_checksum_ignores_gzip_header(tmp_path: Path) -> None:
    raw = PAYLOAD
    a, b = tmp_path / "a.gz", tmp_path / "b.gz"
    a.write_bytes(gzip.compress(raw, mtime=0))
    b.write_bytes(gzip.compress(raw, compresslevel=1, mtime=123))
    assert a.read_bytes() != b.read_bytes()  # different files on disk ...
    ck = sha256(raw)
    for path in (a, b):  # ... the same decompressed content, so both verify
        data = read_bytes(path)
        assert data == raw
        verify(path, data, ck)
    # `gz` overrides the suffix both ways.
    c = tmp_path / "c.bin"
    c.write_bytes(a.read_bytes())
    assert read_bytes(c) == a.read_bytes()
    assert read_bytes(c, gz=True) == raw
    assert read_bytes(a, gz=False) == a.read_bytes()


def test_real_mnist_gz_verifies_against_published_checksum(mnist_raw: Path) -> None:
    spec = get_dataset("mnist")
    (rf,) = [rf for rf in spec.files if rf.path.endswith("t10k-labels-idx1-ubyte.gz")]
    path = mnist_raw / "t10k-labels-idx1-ubyte.gz"
    data = read_bytes(path)
    assert data == gzip.decompress(path.read_bytes())
    assert rf.checksum is not None and rf.checksum.hexdigest == hashlib.sha256(data).hexdigest()
    verify(path, data, rf.checksum)


def test_truncated_gz_is_a_one_line_data_error(tmp_path: Path, mnist_raw: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    full = (mnist_raw / path.name).read_bytes()
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError) as exc:
        read_bytes(path)
    msg = one_line(exc)
    assert str(path) in msg and "download again" in msg


def test_corrupted_content_fails_sha256_check(tmp_path: Path) -> None:
    path = tmp_path / "f.gz"
    bad = bytearray(PAYLOAD)
    bad[1000] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(bad)))
    with pytest.raises(DataError, match="failed its sha256 check") as exc:
        verify(path, read_bytes(path), sha256(PAYLOAD))
    assert str(path) in one_line(exc)
    # md5 is checked the same way (CIFAR and SVHN publish MD5s).
    with pytest.raises(DataError, match="failed its md5 check"):
        verify(path, read_bytes(path), Checksum("md5", hashlib.md5(PAYLOAD).hexdigest()))
    verify(path, read_bytes(path), None)  # no published checksum: nothing to check


def test_corrupted_compressed_byte_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "f.gz"
    blob = bytearray(gzip.compress(PAYLOAD, mtime=0))
    blob[-6] ^= 0xFF  # inside the CRC32/ISIZE trailer: gzip notices
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError) as exc:
        read_bytes(path)
    assert str(path) in one_line(exc)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_bytes(tmp_path / "nope.gz")


def test_file_digest_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = PAYLOAD * 8  # > one 1 MiB chunk
    path.write_bytes(data)
    assert file_digest(path, "sha256") == hashlib.sha256(data).hexdigest()
    assert file_digest(path, "md5") == hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------------------------------
# atomic_write


def test_atomic_write_replaces_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "dir" / "f.txt"
    with atomic_write(target, "w") as f:
        f.write("one")
    assert target.read_text() == "one"
    with atomic_write(target) as f:
        f.write(b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_failure_keeps_old_content(tmp_path: Path, error: type[BaseException]) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(error), atomic_write(target) as f:
        f.write(b"new, half written")
        raise error("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind


def test_atomic_write_failure_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    with pytest.raises(ValueError), atomic_write(target) as f:
        f.write(b"x")
        raise ValueError
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# download (a real HTTP server on 127.0.0.1)


def test_download_succeeds_and_verifies(tmp_path: Path, http_server: LoopbackServer) -> None:
    (http_server.root / "f.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "f.bin"
    download(http_server.url("f.bin"), dest, sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("f.bin.part").exists()
    assert http_server.range_headers() == [None]
    assert http_server.requests[0][1].get("User-Agent") == "dla"


def test_download_gz_is_verified_over_decompressed_content(tmp_path: Path, http_server: LoopbackServer) -> None:
    blob = gzip.compress(PAYLOAD, mtime=99)
    (http_server.root / "f.gz").write_bytes(blob)
    dest = tmp_path / "out" / "f.gz"
    download(http_server.url("f.gz"), dest, sha256(PAYLOAD))
    assert dest.read_bytes() == blob  # stored as served, still compressed


def test_download_resumes_a_partial_file(tmp_path: Path, http_server: LoopbackServer) -> None:
    (http_server.root / "f.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "f.bin"
    dest.parent.mkdir()
    half = len(PAYLOAD) // 2
    dest.with_name("f.bin.part").write_bytes(PAYLOAD[:half])
    download(http_server.url("f.bin"), dest, sha256(PAYLOAD))
    assert http_server.range_headers() == [f"bytes={half}-"]
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.bin"]


def test_download_restarts_when_server_ignores_range(tmp_path: Path, http_server: LoopbackServer) -> None:
    (http_server.root / "f.bin").write_bytes(PAYLOAD)
    http_server.ignore_range = True  # answers 200 with the whole file
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(b"stale bytes that must not be kept")
    download(http_server.url("f.bin"), dest, sha256(PAYLOAD))
    assert http_server.range_headers() == ["bytes=33-"]
    assert dest.read_bytes() == PAYLOAD


def test_download_checksum_mismatch_leaves_nothing(tmp_path: Path, http_server: LoopbackServer) -> None:
    (http_server.root / "f.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "f.bin"
    with pytest.raises(DataError, match="failed its sha256 check") as exc:
        download(http_server.url("f.bin"), dest, sha256(b"something else"))
    one_line(exc)
    assert not dest.exists()
    assert not dest.with_name("f.bin.part").exists()


def test_download_unreachable_creates_nothing(tmp_path: Path, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/x"
    dest = tmp_path / "new" / "x"
    with pytest.raises(DataError) as exc:
        download(url, dest, sha256(PAYLOAD), timeout=5)
    assert url in one_line(exc)
    assert list(tmp_path.iterdir()) == []


def test_download_http_404_is_a_data_error(tmp_path: Path, http_server: LoopbackServer) -> None:
    dest = tmp_path / "out" / "missing.bin"
    with pytest.raises(DataError, match="Not Found") as exc:
        download(http_server.url("missing.bin"), dest)
    assert http_server.url("missing.bin") in one_line(exc)
    assert not dest.exists()
    assert not dest.with_name("missing.bin.part").exists()


def test_download_cut_short_keeps_part_for_resume(tmp_path: Path, http_server: LoopbackServer) -> None:
    (http_server.root / "f.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "f.bin"
    http_server.truncate_to = 5000  # promises the full Content-Length, then hangs up
    with pytest.raises(DataError) as exc:
        download(http_server.url("f.bin"), dest, None)
    assert not dest.exists()  # a truncated file must never appear under the real name
    assert "resume" in str(exc.value)
    assert dest.with_name("f.bin.part").read_bytes() == PAYLOAD[:5000]
    http_server.truncate_to = None
    download(http_server.url("f.bin"), dest, sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_download_chunked_cut_short_is_a_data_error(tmp_path: Path, http_server: LoopbackServer) -> None:
    (http_server.root / "f.bin").write_bytes(PAYLOAD)
    http_server.chunked_cut = True
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError) as exc:
        download(http_server.url("f.bin"), dest, sha256(PAYLOAD))
    assert http_server.url("f.bin") in one_line(exc)
    assert not dest.exists()


def test_download_complete_part_is_finished(tmp_path: Path, http_server: LoopbackServer) -> None:
    # The process died after the last byte arrived but before the rename.
    (http_server.root / "f.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(PAYLOAD)
    download(http_server.url("f.bin"), dest, sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


# --------------------------------------------------------------------------------------------------
# locate: where files are looked for, mirrors, the offline message


def _toy_spec(files: tuple[RemoteFile, ...], system_dirs: tuple[str, ...] = ()) -> DatasetSpec:
    def load(ctx: object, train: bool) -> None:
        raise AssertionError("not called")

    return DatasetSpec("toy", "a test dataset", load, None, None, files=files, system_dirs=system_dirs)


def test_locate_search_order(tmp_path: Path) -> None:
    rf = RemoteFile("TOY/raw/a.bin", sha256(PAYLOAD))
    root, system = tmp_path / "root", tmp_path / "system"
    system.mkdir()
    (system / "a.bin").write_bytes(PAYLOAD)
    spec = _toy_spec((rf,), (str(system),))
    assert locate(spec, root) == {rf.path: system / "a.bin"}
    (root / "toy" / "TOY" / "raw").mkdir(parents=True)
    (root / "toy" / rf.path).write_bytes(PAYLOAD)
    assert locate(spec, root) == {rf.path: root / "toy" / rf.path}
    (root / "TOY" / "raw").mkdir(parents=True)
    (root / rf.path).write_bytes(PAYLOAD)
    assert locate(spec, root) == {rf.path: root / rf.path}


def test_locate_offline_lists_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            http_server: LoopbackServer) -> None:
    monkeypatch.setenv("DLA_OFFLINE", "1")
    (http_server.root / "a.bin").write_bytes(PAYLOAD)
    files = (RemoteFile("TOY/a.bin", sha256(PAYLOAD), (http_server.url("a.bin"),)),
             RemoteFile("TOY/b.bin", None, (http_server.url("b.bin"),)))
    root = tmp_path / "root"
    with pytest.raises(DataError) as exc:
        locate(_toy_spec(files, ("/nonexistent/system/dir",)), root)
    msg = one_line(exc)
    for needle in ("TOY/a.bin", "TOY/b.bin", str(root), "offline", "/nonexistent/system/dir", "--data-root"):
        assert needle in msg
    assert http_server.requests == []  # offline means no request at all
    assert not root.exists()


@pytest.mark.usefixtures("online")
def test_locate_falls_back_to_the_next_mirror(tmp_path: Path, http_server: LoopbackServer, closed_port: int) -> None:
    (http_server.root / "a.bin").write_bytes(PAYLOAD)
    rf = RemoteFile("TOY/a.bin", sha256(PAYLOAD), (f"http://127.0.0.1:{closed_port}/a.bin", http_server.url("a.bin")))
    root = tmp_path / "root"
    assert locate(_toy_spec((rf,)), root) == {rf.path: root / rf.path}
    assert (root / rf.path).read_bytes() == PAYLOAD
    # Found now: a second call makes no request.
    n = len(http_server.requests)
    locate(_toy_spec((rf,)), root)
    assert len(http_server.requests) == n


@pytest.mark.usefixtures("online")
def test_locate_online_failure_reports_the_reason(tmp_path: Path, closed_port: int) -> None:
    rf = RemoteFile("TOY/a.bin", sha256(PAYLOAD), (f"http://127.0.0.1:{closed_port}/a.bin",))
    no_url = RemoteFile("TOY/b.bin", None)
    root = tmp_path / "root"
    with pytest.raises(DataError) as exc:
        locate(_toy_spec((rf,)), root)
    msg = one_line(exc)
    assert "TOY/a.bin" in msg and f"127.0.0.1:{closed_port}" in msg
    with pytest.raises(DataError, match="no download source"):
        locate(_toy_spec((no_url,)), root)
    assert not root.exists()


def test_copy_of_real_file_roundtrips_through_download(tmp_path: Path, http_server: LoopbackServer,
                                                       mnist_raw: Path) -> None:
    # An independent reference: the published checksum of a real MNIST file, fetched over HTTP.
    name = "t10k-labels-idx1-ubyte.gz"
    shutil.copyfile(mnist_raw / name, http_server.root / name)
    (rf,) = [rf for rf in get_dataset("mnist").files if rf.path.endswith(name)]
    dest = tmp_path / rf.path
    download(http_server.url(name), dest, rf.checksum)
    assert dest.read_bytes() == (mnist_raw / name).read_bytes()


def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path: Path) -> None:
    from dla.data.files import atomic_write

    # mkstemp alone makes 0600 files: plots and tables nobody else on the machine could read.
    with atomic_write(tmp_path / "a.png") as f:
        f.write(b"x")
    with open(tmp_path / "b.png", "wb") as f:
        f.write(b"x")
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == (tmp_path / "b.png").stat().st_mode & 0o777
