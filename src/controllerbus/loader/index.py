"""A small client for PEP 503 / PEP 691 simple package indexes (pypiserver, devpi, PyPI).

Rules: docs/production.md#loading-from-a-package-index.

Only what the loader needs: list a project's files with their hashes, and download
one file. JSON (PEP 691) is asked for first and the HTML page (PEP 503) is the
fallback, chosen by the response's ``Content-Type``. Network errors, timeouts and
5xx answers are retried with exponential backoff; when every attempt failed,
:class:`IndexUnavailable` says which URL and why. A 404 is an answer (the project is
not on the index), not an outage.

urllib honours the usual proxy variables (``https_proxy``, ``no_proxy``). The client
is blocking: call it from a thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from controllerbus.errors import LoaderError

__all__ = ["IndexClient", "IndexFile", "IndexUnavailable", "ProjectNotFound"]

logger = logging.getLogger(__name__)

_JSON = "application/vnd.pypi.simple.v1+json"
_ACCEPT = f"{_JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
_CHUNK = 1024 * 1024


class IndexUnavailable(LoaderError):
    """The index did not answer usefully after every retry."""

    def __init__(self, url: str, attempts: int, reason: str) -> None:
        self.url = url
        self.attempts = attempts
        self.reason = reason
        super().__init__(url, attempts, reason)

    def __str__(self) -> str:
        return (
            f"package index unavailable: {self.url} failed {self.attempts} time(s), last: "
            f"{self.reason}. Running plugins keep serving; check --index-url and that the "
            "index server is up (the daemon retries on the next trust-file change or poll)"
        )


class ProjectNotFound(LoaderError):
    """The index has no page for the project (HTTP 404)."""


@dataclass(frozen=True, slots=True)
class IndexFile:
    """One file of a project page.

    Attributes:
        filename: the file name.
        url: absolute download URL (without the hash fragment).
        hashes: algorithm → hex digest, as the index declares them (may be empty).
        yanked: the index marks the file as yanked.
    """

    filename: str
    url: str
    hashes: Mapping[str, str] = field(default_factory=dict)
    yanked: bool = False


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))


def _parse_html(text: str, base: str) -> list[IndexFile]:
    parser = _Links()
    parser.feed(text)
    files = []
    for attrs in parser.links:
        href = attrs.get("href")
        if not href:
            continue
        url, _, fragment = urllib.parse.urljoin(base, href).partition("#")
        algo, _, digest = fragment.partition("=")
        hashes = {algo.lower(): digest.lower()} if algo and digest else {}
        filename = urllib.parse.unquote(url.rsplit("/", 1)[-1])
        files.append(IndexFile(filename, url, hashes, "data-yanked" in attrs))
    return files


def _parse_json(data: Any, base: str) -> list[IndexFile]:
    files = []
    for item in data.get("files", []) if isinstance(data, dict) else []:
        if not isinstance(item, dict) or "url" not in item or "filename" not in item:
            continue
        url = urllib.parse.urljoin(base, str(item["url"])).partition("#")[0]
        hashes = {str(k).lower(): str(v).lower() for k, v in dict(item.get("hashes", {})).items()}
        files.append(IndexFile(str(item["filename"]), url, hashes, bool(item.get("yanked"))))
    return files


class IndexClient:
    """Read a simple index at ``url`` (the ``.../simple/`` URL pip's --index-url takes).

    Args:
        url: the index root.
        timeout: seconds per request.
        attempts: tries per request before :class:`IndexUnavailable`.
        backoff: seconds before the second try; doubled after each failure.
        sleep: the sleep function (tests pass a fake to avoid waiting).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self._sleep = sleep

    def _open(self, url: str, accept: str) -> Any:
        """urlopen with retries; returns the open response."""
        delay = self.backoff
        reason = ""
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(
                url, headers={"Accept": accept, "User-Agent": "controllerbus-loader"}
            )
            try:
                return urllib.request.urlopen(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    raise ProjectNotFound(f"{url}: not found on the index (HTTP 404)") from None
                reason = f"HTTP {exc.code} {exc.reason}"
                if exc.code < 500 and exc.code != 429:
                    raise IndexUnavailable(url, attempt, reason) from None
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                reason = str(getattr(exc, "reason", exc)) or type(exc).__name__
            if attempt < self.attempts:
                logger.warning(
                    "index %s: %s (attempt %d/%d); retrying in %.1f s",
                    url,
                    reason,
                    attempt,
                    self.attempts,
                    delay,
                )
                self._sleep(delay)
                delay *= 2
        raise IndexUnavailable(url, self.attempts, reason)

    def project_files(self, name: str) -> list[IndexFile]:
        """The files of project ``name`` (a canonical name).

        Raises:
            ProjectNotFound: the index has no such project.
            IndexUnavailable: the index did not answer.
        """
        url = urllib.parse.urljoin(self.url, urllib.parse.quote(name) + "/")
        with self._open(url, _ACCEPT) as response:
            try:
                body = response.read()
            except (OSError, TimeoutError) as exc:
                raise IndexUnavailable(url, 1, f"reading the page failed: {exc}") from exc
            ctype = response.headers.get("Content-Type", "")
            base = response.geturl()
        text = body.decode("utf-8", "replace")
        if ctype.split(";")[0].strip() == _JSON:
            try:
                return _parse_json(json.loads(text), base)
            except ValueError as exc:
                raise IndexUnavailable(url, 1, f"malformed PEP 691 JSON: {exc}") from exc
        return _parse_html(text, base)

    def download(self, file: IndexFile, dest: Path) -> str:
        """Download ``file`` to ``dest`` (via a hidden temp name, renamed when complete).

        Returns:
            The sha256 of the bytes written.

        Raises:
            IndexUnavailable: the download failed after every retry.
            LoaderError: the bytes do not match the hash the index declared.
        """
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        digest = hashlib.sha256()
        try:
            with self._open(file.url, "*/*") as response, tmp.open("wb") as out:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except (OSError, TimeoutError) as exc:
            tmp.unlink(missing_ok=True)
            raise IndexUnavailable(file.url, 1, f"download interrupted: {exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        sha = digest.hexdigest()
        declared = file.hashes.get("sha256")
        if declared is not None and declared != sha:
            tmp.unlink(missing_ok=True)
            raise LoaderError(
                f"{file.url}: the index declares sha256 {declared} but served bytes with "
                f"sha256 {sha}; nothing was kept"
            )
        os.replace(tmp, dest)
        return sha
