"""IndexClient against a real HTTP server on 127.0.0.1 (PEP 691 JSON and PEP 503 HTML)."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from controllerbus.errors import LoaderError
from controllerbus.loader.index import IndexClient, IndexUnavailable, ProjectNotFound
from controllerbus.loader.trust import parse_trust_file
from controllerbus.loader.wheelcache import mirror_trusted

WHEEL = "demo_dep-1.0.0-py3-none-any.whl"
DATA = b"wheel bytes"
SHA = hashlib.sha256(DATA).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    json_ok = True
    served_sha = SHA
    failures: list[int] = []  # noqa: RUF012  # HTTP statuses to answer first, in order

    def log_message(self, *_args: object) -> None:
        return

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.failures:
            self._send(self.failures.pop(0), b"down", "text/plain")
        elif self.path == "/simple/demo-dep/":
            if self.json_ok and "vnd.pypi.simple.v1+json" in self.headers.get("Accept", ""):
                files = [{"filename": WHEEL, "url": f"../../files/{WHEEL}",
                          "hashes": {"sha256": self.served_sha}},
                         {"filename": "demo_dep-1.0.0.tar.gz", "url": "/files/x.tar.gz",
                          "hashes": {}}]  # fmt: skip
                body = json.dumps({"meta": {"api-version": "1.0"}, "files": files}).encode()
                self._send(200, body, "application/vnd.pypi.simple.v1+json")
            else:
                body = f'<a href="/files/{WHEEL}#sha256={self.served_sha}">{WHEEL}</a>'.encode()
                self._send(200, body, "text/html")
        elif self.path == f"/files/{WHEEL}":
            self._send(200, DATA, "application/octet-stream")
        else:
            self._send(404, b"no", "text/plain")


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.json_ok, _Handler.served_sha, _Handler.failures = True, SHA, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("json_ok", [True, False])
def test_project_files_json_and_html(index: str, json_ok: bool) -> None:
    _Handler.json_ok = json_ok
    files = IndexClient(index).project_files("demo-dep")
    wheel = next(f for f in files if f.filename == WHEEL)
    assert wheel.url.endswith(f"/files/{WHEEL}")
    assert wheel.hashes == {"sha256": SHA}


def test_retries_5xx_with_backoff_then_succeeds(index: str) -> None:
    _Handler.failures = [503, 502]
    slept: list[float] = []
    files = IndexClient(index, sleep=slept.append).project_files("demo-dep")
    assert files
    assert slept == [0.5, 1.0]


def test_unavailable_and_not_found_are_clear(index: str) -> None:
    with pytest.raises(ProjectNotFound, match="404"):
        IndexClient(index).project_files("nothing-here")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/simple/"
    slept: list[float] = []
    with pytest.raises(IndexUnavailable) as info:
        IndexClient(closed, attempts=3, sleep=slept.append).project_files("demo-dep")
    assert slept == [0.5, 1.0]
    assert "failed 3 time(s)" in str(info.value)
    assert "keep serving" in str(info.value)


def test_mirror_keeps_only_pinned_bytes(index: str, tmp_path: Path) -> None:
    trust = parse_trust_file(f"demo-dep==1.0.0 --hash=sha256:{SHA}\n")
    report = mirror_trusted(IndexClient(index), trust, tmp_path)
    assert report.downloaded == [WHEEL]
    assert (tmp_path / WHEEL).read_bytes() == DATA
    assert mirror_trusted(IndexClient(index), trust, tmp_path).present == [WHEEL]

    # The index declares (and serves) bytes other than the pinned ones: nothing is kept.
    other = tmp_path / "other"
    _Handler.served_sha = "f" * 64
    trust = parse_trust_file(f"{WHEEL} --hash=sha256:{SHA}\n")
    with pytest.raises(LoaderError, match="declares sha256"):
        IndexClient(index).download(IndexClient(index).project_files("demo-dep")[0], other)
    assert mirror_trusted(IndexClient(index), trust, tmp_path / "m").downloaded == []
    assert not list((tmp_path / "m").iterdir())
