"""Fixtures for the data-layer tests: a loopback HTTP server with Range support, real-data paths, checksums."""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dla.data.files import Checksum, digest, read_bytes
from dla.data.registry import DatasetSpec, get_dataset

from ..conftest import DATA_ROOT

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The shared, read-only data root (never written to)."""
    if not DATA_ROOT.is_dir():
        pytest.skip(f"no data root at {DATA_ROOT} (set DLA_DATA)")
    return DATA_ROOT


@pytest.fixture(scope="session")
def mnist_raw(real_root: Path) -> Path:
    """The folder with the four original MNIST .gz files."""
    for raw in (real_root / "mnist" / "MNIST" / "raw", real_root / "MNIST" / "raw"):  # both layouts `locate` takes
        if all((raw / f).is_file() for f in IDX_FILES):
            return raw
    pytest.skip(f"MNIST not found under {real_root}")


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    if not all((FASHION_DIR / f).is_file() for f in IDX_FILES):
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_DIR}")
    return FASHION_DIR


@pytest.fixture(scope="session")
def cifar_sample(real_root: Path) -> Path:
    path = real_root / "cifar10_sample"
    if not (path / "train").is_dir():
        pytest.skip(f"no CIFAR-10 sample at {path}")
    return path


class LoopbackServer:
    """Serves files from `root` on 127.0.0.1; honours `Range: bytes=N-`; records every request."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.ignore_range = False
        self.truncate_to: int | None = None  # send a full Content-Length but only this many body bytes
        self.chunked_cut = False  # answer with chunked transfer encoding and hang up after the first chunk
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers.items())))
                path = (server.root / self.path.lstrip("/")).resolve()
                if not path.is_file() or not path.is_relative_to(server.root.resolve()):
                    self.send_error(404)
                    return
                data = path.read_bytes()
                if server.chunked_cut:
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"%x\r\n%s\r\n" % (1000, data[:1000]))
                    self.close_connection = True
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and not server.ignore_range:
                    if not (rng.startswith("bytes=") and rng.endswith("-") and rng[6:-1].isdigit()):
                        self.send_error(400, f"only 'bytes=N-' ranges are supported, got {rng!r}")
                        return
                    start = int(rng[len("bytes="):-1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if server.truncate_to is not None:
                    body = body[: server.truncate_to]
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def range_headers(self) -> list[str | None]:
        return [headers.get("Range") for _, headers in self.requests]


@pytest.fixture
def http_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    # Loopback only: make sure no proxy from the environment reroutes the requests.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "server"
    root.mkdir()
    server = LoopbackServer(root)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=5)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo the suite-wide DLA_OFFLINE=1 for a test that downloads from the loopback server."""
    monkeypatch.delenv("DLA_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def checksum_of(path: Path, algo: str = "md5") -> Checksum:
    """The registry's kind of checksum (over decompressed content) for a file a test made."""
    return Checksum(algo, digest(read_bytes(path), algo))


@pytest.fixture
def set_checksums(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Path], DatasetSpec]:
    """`set_checksums(name, root)`: make a dataset's stand-in files under `root` verify (undone after the test).

    Each registered file that exists under `root` gets the checksum of its content; the others keep theirs.
    """

    def patch(name: str, root: Path) -> DatasetSpec:
        spec = get_dataset(name)
        files = tuple(
            dataclasses.replace(rf, checksum=checksum_of(root / rf.path, rf.checksum.algo if rf.checksum else "md5"))
            if (root / rf.path).is_file() else rf
            for rf in spec.files
        )
        monkeypatch.setattr(spec, "files", files)
        return spec

    return patch
