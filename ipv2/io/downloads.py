"""Downloading a model over HTTPS: progress, resume, a size limit and a hash check.

A model is hundreds of megabytes fetched over hospital networks that drop connections,
so a download goes into a ``.part`` file that survives an interruption: the next attempt
(in the same call, or a later ``ipv2 models install`` of the same address) asks the
server for the rest with an HTTP ``Range`` request and appends. A server that ignores
the range gets the file re-downloaded from the start, never spliced.

Only ``https://`` is accepted, plus ``http://`` to this computer (127.0.0.1, localhost,
::1), which is what a test server or a local mirror uses; a redirect is held to the same
rule, so HTTPS cannot be downgraded on the way. The size limit is enforced from the
announced length before anything is written, and again on the bytes received. With an
expected SHA-256 a file that does not match is deleted and nothing is returned.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from ipv2 import __version__
from ipv2.core.errors import InputError

Progress = Callable[[int, int], None]  # (bytes so far, total bytes or 0 when unknown)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_CHUNK = 1 << 16
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check_url(url: str) -> str:
    """``url`` if ipv2 may download from it, else an :class:`InputError` saying why not."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and host in LOOPBACK_HOSTS:
        return url
    if parts.scheme == "http":
        raise InputError(
            f"refused {url}: plain http can be altered on the way; use the https:// address"
        )
    raise InputError(f"refused {url!r}: give an https:// address, a model folder or a .zip file")


def normalise_sha256(text: str | None) -> str | None:
    """A lower-case 64-digit hex digest, or :class:`InputError` for anything else."""
    if text is None:
        return None
    digest = text.strip().lower()
    if not _HEX64.match(digest):
        raise InputError(f"--sha256 must be 64 hexadecimal digits, got {text!r}")
    return digest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class TooLargeError(InputError):
    """The file is over the size limit; what was received is deleted, not kept to resume."""


class _SameRuleRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to addresses :func:`check_url` accepts (no https -> http)."""

    def redirect_request(self, req: Any, *args: Any) -> Any:
        """urllib's hook with (fp, code, msg, headers, newurl) after the request."""
        check_url(str(args[-1]))
        return super().redirect_request(req, *args)


_OPENER = urllib.request.build_opener(_SameRuleRedirects())


def download(
    url: str,
    part: Path,
    *,
    max_bytes: int,
    sha256: str | None = None,
    progress: Progress | None = None,
    attempts: int = 3,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` into ``part`` (resuming what is already there); return ``part``.

    ``attempts`` bounds how often a dropped connection is resumed within this call; when
    they run out the ``.part`` file stays for the next call to resume. A wrong ``sha256``
    deletes the file and raises :class:`InputError`.
    """
    check_url(url)
    expected = normalise_sha256(sha256)
    part.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, max(attempts, 1) + 1):
        try:
            _fetch(url, part, max_bytes=max_bytes, progress=progress, timeout=timeout)
            break
        except TooLargeError:
            part.unlink(missing_ok=True)
            raise
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                raise InputError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
            if attempt >= attempts:
                have = part.stat().st_size if part.exists() else 0
                raise InputError(
                    f"download of {url} interrupted after {have} bytes ({_reason(exc)}); "
                    "run the same install again to resume it"
                ) from None
    if expected is not None:
        got = file_sha256(part)
        if got != expected:
            part.unlink(missing_ok=True)
            raise InputError(
                f"{url} does not match the expected SHA-256 (got {got}, expected {expected}); "
                "the download was deleted and nothing was installed"
            )
    return part


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _fetch(
    url: str, part: Path, *, max_bytes: int, progress: Progress | None, timeout: float
) -> None:
    """One request: the whole file, or the rest of it after what ``part`` holds."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"ipv2/{__version__}", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # asked past the end: the part is stale or complete
            part.unlink()
            raise ConnectionError("the server refused the resume range; starting over") from None
        raise
    with response:
        try:
            start, total = _span(response, have)
        except ConnectionError:
            part.unlink(missing_ok=True)
            raise
        if total is not None and total > max_bytes:
            raise TooLargeError(
                f"refused {url}: it is {total / 2**20:.1f} MiB, over the "
                f"{max_bytes / 2**20:.0f} MiB limit (raise it with --max-size if you trust it)"
            )
        with open(part, "r+b" if start else "wb") as out:
            out.seek(start)
            out.truncate()
            _copy(response, out, start=start, limit=(url, max_bytes, total), progress=progress)
        if total is not None and part.stat().st_size != total:
            raise ConnectionError(f"connection closed at {part.stat().st_size} of {total} bytes")


def _span(response: Any, have: int) -> tuple[int, int | None]:
    """Where the body starts in the file and the file's full size (None if unannounced)."""
    length = response.headers.get("Content-Length")
    size = int(length) if length and length.isdigit() else None
    if response.status == 206 and have:
        match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == have:
            whole = match.group(2)
            return have, (int(whole) if whole != "*" else None)
    if response.status == 206:  # a range we did not ask for: never splice it in
        raise ConnectionError("the server sent another range than asked for; starting over")
    return 0, size


def _copy(
    response: IO[bytes],
    out: IO[bytes],
    *,
    start: int,
    limit: tuple[str, int, int | None],
    progress: Progress | None,
) -> None:
    url, max_bytes, total = limit
    done = start
    reported = -1
    while block := response.read(_CHUNK):
        done += len(block)
        if done > max_bytes:
            raise TooLargeError(
                f"refused {url}: more than the {max_bytes / 2**20:.0f} MiB limit arrived "
                "(raise it with --max-size if you trust it)"
            )
        out.write(block)
        if progress is not None and (done - reported >= 1 << 20 or done == total):
            progress(done, total or 0)
            reported = done
    out.flush()
    os.fsync(out.fileno())
