"""Fetch one file over HTTP(S): progress bar, Range resume, digest check, atomic publish.

Bytes go to ``<dest>.part``; only a complete file whose digest matches
becomes ``<dest>`` (``os.replace``). So:

* an HTTP error (4xx, 5xx) or a refused connection writes nothing;
* a connection that drops mid-transfer leaves the ``.part`` file, and the
  next call asks for the rest with ``Range: bytes=N-`` (a server that
  ignores Range sends the whole file again, which is detected and handled);
* a digest mismatch deletes the ``.part`` file: nothing is left behind.

Every failure is one :class:`DownloadError` line naming the URL.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import AlexKitError

CHUNK = 1 << 20


class DownloadError(AlexKitError):
    """A download that failed; nothing was published at the destination."""


def parse_digest(spec: str) -> tuple[str, str]:
    """``"sha256:HEX"`` -> ("sha256", "hex"); a prefix of >= 8 hex digits is allowed."""
    algo, _, hexdigest = spec.partition(":")
    algo, hexdigest = algo.lower(), hexdigest.lower()
    if algo not in ("sha1", "sha256") or not re.fullmatch(r"[0-9a-f]{8,64}", hexdigest):
        raise AlexKitError(f"bad digest {spec!r}: expected sha1:HEX or sha256:HEX")
    return algo, hexdigest


def file_digest(path: str | os.PathLike, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def digest_matches(actual: str, published: str) -> bool:
    return actual.startswith(published)


def check_file_digest(path: str | os.PathLike, spec: str) -> tuple[bool, str]:
    """(matches, "algo:actual hex") of a local file against a published digest."""
    algo, want = parse_digest(spec)
    actual = file_digest(path, algo)
    return digest_matches(actual, want), f"{algo}:{actual}"


def download(url: str, dest: str | os.PathLike, digest: str | None = None, progress: bool = True, timeout: float = 60.0,
             _retried: bool = False) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``); returns ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    algo, want = parse_digest(digest) if digest else ("sha256", None)
    start = part.stat().st_size if part.exists() else 0
    resp = _request(url, start, timeout)
    if resp is None or (start and not _continues(resp, start)):
        # the partial file is not a prefix of this one, or the server sent another range: start over
        if resp is not None:
            resp.close()
        if _retried:
            raise DownloadError(f"{url}: the server cannot resume the partial download {part}; delete it and run again")
        part.unlink()
        return download(url, dest, digest, progress, timeout, _retried=True)
    with resp:
        if start and resp.status != 206:
            start = 0  # the server ignored Range and sends the whole file
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None and length.isdigit() else None
        hasher = hashlib.new(algo)
        if start:
            with open(part, "rb") as f:
                while chunk := f.read(CHUNK):
                    hasher.update(chunk)
        received = _receive(resp, url, part, start, total, hasher, progress)
    if total is not None and received < total:
        raise DownloadError(f"{url}: connection closed after {received} of {total} bytes; "
                            f"partial download kept in {part}: run again to resume")
    if want is not None:
        actual = hasher.hexdigest()
        if not digest_matches(actual, want):
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: {algo} {actual} differs from the published {want}; download discarded, nothing written")
    os.replace(part, dest)
    return dest


def _request(url: str, start: int, timeout: float):
    """The response for ``url`` from byte ``start`` on; None when the server refuses that range (416)."""
    headers = {"User-Agent": "alexnet-kit", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:
            return None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; nothing written") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"{url}: network error ({reason}); nothing written") from None


def _continues(resp, start: int) -> bool:
    """Whether a response to a Range request from ``start`` can be appended: a 206 from exactly there,
    or a whole file (200: the server ignored Range, the caller starts over in place)."""
    if resp.status != 206:
        return True
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    return bool(m) and int(m.group(1)) == start


def _receive(resp, url: str, part: Path, start: int, total: int | None, hasher, progress: bool) -> int:
    """Append the body to ``part`` (from scratch when ``start`` is 0), hashing it; returns the bytes held."""
    from tqdm import tqdm  # here, not at the top: only a download needs the bar

    received = start
    bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[: -len(".part")],
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        with open(part, "ab" if start else "wb") as out, bar:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (http.client.IncompleteRead, OSError, http.client.HTTPException) as e:
                    raise DownloadError(f"{url}: connection lost after {received} bytes ({type(e).__name__}); "
                                        f"partial download kept in {part}: run again to resume") from None
                if not chunk:
                    return received
                out.write(chunk)
                hasher.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except KeyboardInterrupt:
        raise DownloadError(f"{url}: interrupted after {received} bytes; partial download kept in {part}: run again to resume") from None
