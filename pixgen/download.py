"""One function that downloads model files safely.

``download(urls, dest, ...)`` tries each URL in order with retries and backoff, resumes a partial file with
an HTTP ``Range`` request, shows a progress bar with size and speed, and renames the temporary file into
place only after its size, checksum (when known) and a caller-supplied check agree. A file lock keeps two
processes from downloading the same file at once. Every failure ends in a :class:`DownloadError` that names
the URLs, the target path and how to place the file by hand.

Only the standard library (urllib) does the HTTP; nothing here shells out.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

from filelock import FileLock
from filelock import Timeout as LockTimeout
from tqdm.auto import tqdm

from pixgen import __version__
from pixgen.atomic import blocking_file
from pixgen.errors import ModelError, PixgenError

__all__ = ["download", "DownloadError", "sha256_of", "partial_path"]

CHUNK_BYTES = 1 << 20
_HTML = "the server sent a web page instead of the file (an error, login or moved-link page?)"
MAX_BACKOFF_S = 30.0


class DownloadError(ModelError):
    """A file that could not be downloaded (or did not pass its checks) from any of its URLs."""


class _Retry(Exception):
    """A failure that may go away if the same URL is asked again: timeout, dropped connection, HTTP 5xx."""


class _NextMirror(Exception):
    """A failure this URL will keep giving (404, an HTML page, the wrong file): go on to the next URL.

    ``discard`` says whether the partial file holds wrong data and must be deleted.
    """

    def __init__(self, message: str, discard: bool = False, unreachable: bool = False, wrong_file: bool = False):
        super().__init__(message)
        self.discard = discard
        self.unreachable = unreachable
        self.wrong_file = wrong_file or discard  # the URL answered with something that is not the file


def _open_part(path: Path, mode: str) -> BinaryIO:
    """Open the partial file (a seam for tests that simulate a full disk)."""
    return open(path, mode)  # noqa: SIM115 - closed by the caller's with-block


def partial_path(dest: Path) -> Path:
    """Where the unfinished download of ``dest`` is kept between attempts."""
    return dest.with_name(dest.name + ".part")


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def download(
    urls: Sequence[str],
    dest: Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    verify: Callable[[Path], None] | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    progress: bool = True,
    backoff: float = 1.0,
    name: str | None = None,
    lock_timeout: float | None = None,
) -> Path:
    """Download ``dest`` from the first URL that works and return its path.

    Args:
        urls: locations tried in order; a URL that keeps failing hands over to the next one.
        dest: final path. Data goes to ``dest.part`` first and is renamed into place only when checked.
        size: exact size in bytes when known; the server's ``Content-Length`` is checked either way.
        sha256: expected hex digest when known.
        verify: called with the finished temporary file; raising rejects the file (used for a structural
            check of checkpoints whose checksum is unknown).
        timeout: seconds to wait for a connection or for the next block of data.
        retries: extra attempts per URL for failures that may be transient (timeouts, drops, HTTP 5xx).
        progress: show a progress bar and retry notes on stderr.
        backoff: seconds before the first retry; doubled on each further retry (capped at 30 s).
        name: registry name of the model, used only to make error messages actionable.
        lock_timeout: seconds to wait for another process downloading the same file (None: wait forever).

    Raises:
        DownloadError: no URL produced a file that passed the checks, the disk is full, or the lock timed out.
    """
    dest = Path(dest)
    urls = list(dict.fromkeys(_as_url(u, name) for u in urls if u))
    if not urls:
        raise DownloadError(f"no download URL is known for {dest.name}", _by_hand_hint([], dest, name))
    _usable_target(dest)
    lock = FileLock(str(dest) + ".lock")
    try:
        lock.acquire(timeout=0)
    except LockTimeout:  # (a subclass of OSError: caught first)
        _note(progress, f"another pixgen process is downloading {dest.name}; waiting for it to finish")
        try:
            lock.acquire(timeout=-1 if lock_timeout is None else lock_timeout)
        except LockTimeout:
            raise DownloadError(
                f"another process has been downloading {dest} for more than {lock_timeout:g} s",
                f"wait for it to finish, or remove {dest}.lock if no pixgen process is running",
            ) from None
    except OSError as exc:
        raise DownloadError(f"cannot create {dest}.lock: {exc.strerror or exc}",
                            "check that the cache folder is writable, or move it with PIXGEN_HOME or --home") from None
    try:
        if dest.is_file() and (size is None or dest.stat().st_size == size):
            return dest  # another process finished it while we waited (or it was already there)
        return _download_locked(urls, dest, size, sha256, verify, timeout, retries, progress, backoff, name)
    finally:
        lock.release()


def _usable_target(dest: Path) -> None:
    """Make the cache folder of ``dest``; refuse a folder that is a file, or a ``dest`` that is a folder."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = blocking_file(dest.parent)
        if blocker is not None:
            raise DownloadError(f"the cache folder {dest.parent} cannot be made: {blocker} is a file, not a directory",
                                "point PIXGEN_HOME or --home at a directory, or move that file away") from None
        raise DownloadError(f"cannot create the cache folder {dest.parent}: {exc.strerror or exc}",
                            "check that it is writable, or move it with PIXGEN_HOME or --home") from None
    if dest.is_dir():
        raise DownloadError(f"{dest} is a directory, so the download cannot be saved there",
                            "remove it (or move it away) and run the same command again")


def _download_locked(urls, dest, size, sha256, verify, timeout, retries, progress, backoff, name) -> Path:
    part = partial_path(dest)
    failures: list[tuple[str, str]] = []
    unreachable = 0
    wrong: set[str] = set()  # URLs that served something other than the file
    restarted = False  # a resumed file that failed its checks is downloaded again from byte 0, once
    for url in urls:
        for attempt in range(retries + 1):
            if attempt:
                wait = min(backoff * 2 ** (attempt - 1), MAX_BACKOFF_S)
                _note(progress, f"retrying {_short(url)} in {wait:.1f} s (attempt {attempt + 1} of {retries + 1})")
                time.sleep(wait)
            try:
                resumed = part.is_file() and part.stat().st_size > 0
                _fetch(url, part, size, timeout, progress)
                try:
                    _check(part, size, sha256, verify)
                except _NextMirror as exc:
                    if not (resumed and exc.discard and not restarted):
                        raise
                    # The kept partial file may have come from another file or an older version of this one:
                    # start again rather than make the user run the whole command (and download) once more.
                    restarted = True
                    part.unlink(missing_ok=True)
                    _note(progress, f"{_short(url)}: {exc}; the partial file it resumed may belong to another "
                                    f"file or version, so it was discarded and the download starts again from "
                                    f"the beginning")
                    _fetch(url, part, size, timeout, progress)
                    _check(part, size, sha256, verify)
            except _Retry as exc:
                failures.append((url, str(exc)))
                _note(progress, f"{_short(url)}: {exc}")
                continue
            except _NextMirror as exc:
                failures.append((url, str(exc)))
                _note(progress, f"{_short(url)}: {exc}")
                if exc.discard:
                    part.unlink(missing_ok=True)
                unreachable += exc.unreachable
                if exc.wrong_file:
                    wrong.add(url)
                break
            os.replace(part, dest)
            return dest
    raise _final_error(urls, dest, part, failures, offline=unreachable == len(urls), name=name,
                       wrong=wrong == set(urls))


def _fetch(url: str, part: Path, size: int | None, timeout: float, progress: bool) -> None:
    """Bring ``part`` up to the whole file from ``url``, resuming what is already there."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None and have == size:
        return  # complete from an earlier attempt; the checks decide whether it is good
    headers = {"User-Agent": f"pixgen/{__version__}", "Accept": "*/*"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) URLs from our table
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            total = _content_range(exc.headers.get("Content-Range"))[1]
            if total == have:
                return  # the partial file already holds every byte
            part.unlink(missing_ok=True)
            raise _Retry("the server could not resume the partial file; starting again") from None
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise _Retry(f"the server answered HTTP {exc.code} {exc.reason}") from None
        raise _NextMirror(f"the server answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise _Retry(f"no answer within {timeout:g} s") from None
        if isinstance(reason, (socket.gaierror, ConnectionRefusedError)) or getattr(reason, "errno", None) in (
            errno.ENETUNREACH,
            errno.EHOSTUNREACH,
        ):
            raise _NextMirror(f"could not reach the host ({reason})", unreachable=True) from None
        raise _Retry(f"connection failed ({reason})") from None
    except (socket.timeout, TimeoutError):
        raise _Retry(f"no answer within {timeout:g} s") from None
    except (http.client.HTTPException, OSError) as exc:
        raise _Retry(f"connection failed ({exc.__class__.__name__}: {exc})") from None

    with response:
        content_type = (response.headers.get("Content-Type") or "").lower()
        if "text/html" in content_type:
            raise _NextMirror(_HTML, wrong_file=True)
        length = _int_or_none(response.headers.get("Content-Length"))
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != have:
                part.unlink(missing_ok=True)
                raise _Retry(f"the server resumed at byte {start} instead of {have}; starting again")
            mode = "ab"
        else:
            start, total, mode = 0, length, "wb"
            if have:
                _note(progress, "the server does not support resuming; downloading from the start")
        if total is not None and size is not None and total != size:
            raise _NextMirror(f"the server offers {total} bytes but the file should be {size} bytes",
                              wrong_file=True)
        _stream(response, part, mode, start, total, size, timeout, progress)


def _stream(response, part: Path, mode: str, start: int, total: int | None, size: int | None,
            timeout: float, progress: bool) -> None:
    got = start
    bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[:-5],
               disable=not progress, file=sys.stderr, leave=False, dynamic_ncols=True)
    try:
        with _open_part(part, mode) as out:
            first = start == 0
            while True:
                try:
                    block = response.read(CHUNK_BYTES)
                except (http.client.IncompleteRead, socket.timeout, TimeoutError) as exc:
                    raise _Retry(_lost(got, total, exc, timeout)) from None
                except (http.client.HTTPException, OSError) as exc:
                    raise _Retry(_lost(got, total, exc, timeout)) from None
                if not block:
                    break
                if first and _looks_like_html(block):
                    raise _NextMirror(_HTML, wrong_file=True)
                first = False
                out.write(block)
                got += len(block)
                bar.update(len(block))
                if size is not None and got > size:
                    raise _NextMirror(f"the server sent more than the expected {size} bytes", discard=True)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = part.stat().st_size if part.exists() else 0
            raise DownloadError(
                f"the disk is full while writing {part} ({kept} bytes downloaded so far)",
                f"free some space (or move the cache with PIXGEN_HOME or --home) and run the same command "
                f"again: the partial file {part} is kept and the download resumes from there",
            ) from None
        raise DownloadError(f"could not write {part}: {exc}",
                            "check that the cache directory is writable (or move it with PIXGEN_HOME)") from None
    finally:
        bar.close()
    if total is not None and got < total:
        raise _Retry(f"the connection closed after {got} of {total} bytes (the partial file is kept for resuming)")


def _check(part: Path, size: int | None, sha256: str | None, verify: Callable[[Path], None] | None) -> None:
    actual = part.stat().st_size
    if actual == 0:
        raise _NextMirror("the server sent an empty file", discard=True)
    if size is not None and actual != size:
        raise _NextMirror(f"the download is {actual} bytes but should be {size} bytes", discard=True)
    if sha256:
        digest = sha256_of(part)
        if digest != sha256.lower():
            raise _NextMirror(f"checksum mismatch: the file's SHA-256 is {digest}, expected {sha256.lower()}",
                              discard=True)
    if verify is not None:
        try:
            verify(part)
        except PixgenError as exc:
            raise _NextMirror(f"the downloaded file failed its check: {exc.message}", discard=True) from None
        except Exception as exc:  # noqa: BLE001 - any failure of the check rejects the file
            raise _NextMirror(f"the downloaded file failed its check: {exc}", discard=True) from None


def _final_error(urls, dest: Path, part: Path, failures, *, offline: bool, name: str | None,
                 wrong: bool = False) -> DownloadError:
    lines = [f"could not download {dest.name}" + (" (no download host could be reached: offline?)" if offline else "")]
    for url in urls:
        reasons = [r for u, r in failures if u == url]
        last = reasons[-1] if reasons else "not tried"
        extra = f" (after {len(reasons)} attempts)" if len(reasons) > 1 else ""
        lines.append(f"  {url}\n    -> {last}{extra}")
    if part.exists() and part.stat().st_size:
        lines.append(f"  {part.stat().st_size} bytes are kept in {part}; the next attempt resumes from there")
    return DownloadError("\n".join(lines), _by_hand_hint(urls, dest, name, wrong=wrong))


def _by_hand_hint(urls: Sequence[str], dest: Path, name: str | None, *, wrong: bool = False) -> str:
    if wrong:  # fetching the same URL by hand would give the same wrong file
        where = (f"find a good copy elsewhere (the URL{'s' if len(urls) > 1 else ''} above served something else) "
                 f"and save it as {dest}")
    elif urls:
        where = f"download it yourself from {urls[0]} and save it as {dest}"
    else:
        where = f"save the file as {dest}"
    hint = f"to place the file by hand, {where}"
    if name:
        hint += (f"; or use another copy with `pixgen models download {name} --url URL` "
                 f"or PIXGEN_MIRRORS='{name}=URL'")
    return hint


def _as_url(url: str, name: str | None) -> str:
    """``url`` itself, or ``file://...`` for the path of an existing local file; anything else is refused."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https", "ftp", "file"):
        return url
    local = Path(url).expanduser()
    if local.is_file():
        return local.resolve().as_uri()
    raise DownloadError(f"{url!r} is not a download URL" + (" (no such file either)" if not scheme else ""),
                        "give an http(s):// URL or, for a file on this machine, its path or file:///ABS/PATH")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from ``Content-Range: bytes 100-199/1000`` (or ``bytes */1000``)."""
    if not value or not value.strip().lower().startswith("bytes"):
        return None, None
    spec = value.strip()[5:].strip()
    span, _, total = spec.partition("/")
    first = _int_or_none(span.split("-")[0]) if span != "*" else None
    return first, _int_or_none(total)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _looks_like_html(block: bytes) -> bool:
    head = block[:64].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml"))


def _lost(got: int, total: int | None, exc: BaseException, timeout: float) -> str:
    of = f" of {total}" if total is not None else ""
    why = f"no data for {timeout:g} s" if isinstance(exc, (socket.timeout, TimeoutError)) else "connection lost"
    return f"{why} after {got}{of} bytes (the partial file is kept for resuming)"


def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."


def _note(progress: bool, message: str) -> None:
    if progress:
        print(f"pixgen: {message}", file=sys.stderr)
