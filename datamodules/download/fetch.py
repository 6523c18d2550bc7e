"""One archive over HTTP(S): resumable, with a progress bar, checked before anyone extracts it.

The transfer is pooch's ``HTTPDownloader`` (requests, streaming, tqdm) writing onto the end of
``NAME.part`` with an HTTP ``Range`` request when part of the file is already there; a response
hook refuses a server that ignores the range (the file is then fetched from the start rather than
corrupted). A cut connection is resumed in-process up to ``retries`` times, and the ``.part`` file
stays for the next run. Size and MD5 (pooch's ``file_hash``) are checked before the file is
renamed to ``NAME``; a mismatch keeps it as ``NAME.part`` and nothing is extracted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlparse

from ..base import DataError
from .registry import Archive

CHUNK = 1 << 16


class DownloadError(DataError):
    """A download or extraction that cannot go on: one line saying what and what to do."""


class _RangeIgnored(Exception):
    """The server answered a ranged request with something other than the asked-for bytes."""


class _Bar:
    """tqdm bar for pooch that counts the bytes already in the ``.part`` file too; it appears once
    the server has answered (pooch then sets ``total`` to the response's length)."""

    def __init__(self, offset: int, size: int | None, desc: str):
        self.offset, self.size, self.desc, self.bar = offset, size, desc, None

    @property
    def total(self):
        return self.bar.total if self.bar is not None else self.size

    @total.setter
    def total(self, remaining: int) -> None:
        from tqdm import tqdm

        total = self.offset + remaining if remaining else self.size
        if self.bar is None:
            self.bar = tqdm(total=total, initial=self.offset, unit="B", unit_scale=True, unit_divisor=1024, desc=self.desc, file=sys.stderr, dynamic_ncols=True)
        else:
            self.bar.total = total
            self.bar.refresh()

    def update(self, n: int) -> None:
        if self.bar is not None:
            room = (self.bar.total - self.bar.n) if self.bar.total else n
            self.bar.update(max(0, min(n, room)))

    def reset(self) -> None:  # pooch: reset() then update(total) once complete
        if self.bar is not None:
            self.bar.n = self.offset

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def human(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def file_hash(path: Path, alg: str) -> str:
    import pooch

    return pooch.file_hash(str(path), alg=alg)


def verify(path: Path, archive: Archive) -> None:
    """Size and MD5 against the published values (where there are any).

    Raises:
        DownloadError: a mismatch; the file is left where it is and nothing is extracted.
    """
    have = path.stat().st_size
    if archive.size is not None and have != archive.size:
        raise DownloadError(f"{path}: {have} bytes, the published size is {archive.size}; not extracted. Run the same command again to resume or refetch.")
    if archive.md5 is not None:
        got = file_hash(path, "md5")
        if got != archive.md5:
            raise DownloadError(
                f"{path}: md5 {got} does not match the published {archive.md5} ({archive.url}); not extracted. "
                "Delete the file to download it afresh."
            )


def _transfer(url: str, part: Path, have: int, size: int | None, progress: bool) -> None:
    import pooch

    def check(response, *args, **kwargs):
        if have and response.status_code == 200:
            response.close()
            raise _RangeIgnored
        if have and response.status_code == 206 and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            response.close()
            raise _RangeIgnored

    headers = {"Range": f"bytes={have}-"} if have else {}
    bar = _Bar(have, size, part.name[: -len(".part")]) if progress else False
    try:
        with open(part, "ab") as f:
            pooch.HTTPDownloader(progressbar=bar, chunk_size=CHUNK, headers=headers, hooks={"response": check}, timeout=60)(url, f, None)
    finally:
        if bar:
            bar.close()


def _cause(e: Exception) -> str:
    """The innermost reason of a requests connection error (``NameResolutionError``, refused...)."""
    inner = e.args[0] if e.args else e
    inner = getattr(inner, "reason", inner)
    text = " ".join(str(inner).split())
    if "] " in text:  # urllib3: "<connection object>: Failed to resolve 'host' ([Errno -3] ...)"
        text = text.rsplit("] ", 1)[-1].rstrip(")")
    return f"{type(inner).__name__}: {text[:100]}" if not isinstance(inner, str) else text[:100]


def fetch(archive: Archive, url: str, folder: Path, retries: int = 3, progress: bool = True) -> Path:
    """``folder/<archive file name>``, downloaded (resuming its ``.part``) and checked.

    Raises:
        DownloadError: no network, an HTTP error, the connection cut ``retries`` times (the
            ``.part`` file is kept to resume), or a size/checksum mismatch.
    """
    import requests

    final = folder / archive.filename
    if final.is_file():  # complete and checked by an earlier run
        verify(final, archive)
        return final
    folder.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    host = urlparse(url).netloc or url
    last: Exception | None = None
    attempts, complete = 0, False
    while attempts < max(1, retries) and not complete:
        attempts += 1
        have = part.stat().st_size if part.exists() else 0
        if archive.size is not None and have > archive.size:
            part.unlink()  # cannot be a prefix of the right file
            have = 0
        if archive.size is not None and have == archive.size:
            break
        try:
            _transfer(url, part, have, archive.size, progress)
            complete = True
        except _RangeIgnored:
            part.unlink(missing_ok=True)  # the server sends whole files only: start again (not a failed try)
            attempts -= 1
        except requests.HTTPError as e:
            code = e.response.status_code if e.response is not None else None
            if code == 416 and have:  # nothing left to send: complete, or not a prefix
                if archive.size is None or have == archive.size:
                    break
                part.unlink(missing_ok=True)
                attempts -= 1
                continue
            raise DownloadError(f"{url}: HTTP {code} {getattr(e.response, 'reason', '')}".rstrip() + "; nothing extracted.") from e
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.Timeout, requests.exceptions.ContentDecodingError) as e:
            last = e  # cut mid-transfer: resume from what arrived
        except requests.ConnectionError as e:
            kept = part.stat().st_size if part.exists() else 0
            if not kept:
                part.unlink(missing_ok=True)
            keep = f" {kept} bytes are kept in {part}: run the same command again to resume." if kept else ""
            raise DownloadError(f"cannot reach {host} ({_cause(e)}; no network?).{keep}") from e
    have = part.stat().st_size if part.exists() else 0
    if not complete and not (archive.size is not None and have == archive.size) and last is not None:
        kept = part.stat().st_size if part.exists() else 0
        raise DownloadError(
            f"{url}: the connection broke {attempts} time(s) ({type(last).__name__}); "
            f"{kept} of {archive.size if archive.size is not None else '?'} bytes are kept in {part}: run the same command again to resume."
        )
    verify(part, archive)
    part.rename(final)
    return final
