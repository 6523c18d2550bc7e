"""``download(NAME, DEST)``: fetch, check, extract beside the destination, rename into place.

The archive goes to ``DEST/.downloads/`` (``NAME.part`` while incomplete), is extracted into a
hidden ``DEST/.FOLDER.partial-*`` folder, checked against the layout its datamodule reads, given a
marker file (:data:`MARKER`) and only then renamed to ``DEST/FOLDER``: a folder of that name is
always complete. A folder with the marker is not fetched again.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from .archives import extract
from .fetch import DownloadError, fetch, file_hash, human
from .kaggle import fetch_kaggle
from .registry import DATASETS, KAGGLE_COMPETITION, Dataset

MARKER = ".lesson3-download.json"
MIRROR_ENV = "LESSON3_DATA_MIRROR"


def source_url(ds: Dataset, mirror: str | None) -> str:
    """The archive's URL, or the same file name under ``mirror`` (``--mirror`` / ``$LESSON3_DATA_MIRROR``)."""
    mirror = mirror or os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{ds.archive.filename}" if mirror else ds.archive.url


def present(ds: Dataset, dest: Path) -> dict | None:
    """The marker of a complete earlier download of ``ds`` under ``dest``, or None."""
    marker = dest / ds.folder / MARKER
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def _locate(staging: Path, member: str) -> Path:
    """The folder inside the extracted archive that becomes the dataset folder."""
    if member and (staging / member).is_dir():
        return staging / member
    entries = [p for p in staging.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else staging


def _finish(ds: Dataset, root: Path, record: dict) -> None:
    """Layout fixes, the layout check, then the marker (written last)."""
    for src, dst in ds.move:
        if (root / src).is_dir() and not (root / dst).exists():
            (root / dst).parent.mkdir(parents=True, exist_ok=True)
            (root / src).rename(root / dst)
    missing = [r for r in ds.required if not (root / r).exists()]
    if missing:
        raise DownloadError(f"{record['source']}: the archive does not hold the layout the {ds.task} datamodule reads (missing {', '.join(missing)}); nothing was put in place.")
    (root / MARKER).write_text(json.dumps(record, indent=2))


def _fetch(ds: Dataset, downloads: Path, mirror: str | None, retries: int, progress: bool, test: bool, say) -> tuple[list[Path], dict]:
    if ds.kaggle:
        files = fetch_kaggle(ds, downloads / ds.name, test=test, progress=progress, say=say)
        return files, {"source": f"kaggle competition {KAGGLE_COMPETITION}", "files": [p.name for p in files], "checksum": "zip/7z CRCs"}
    url = source_url(ds, mirror)
    a = ds.archive
    say(f"{ds.name}: {ds.description}; {a.filename} ({human(a.size)}) from {url}")
    path = fetch(a, url, downloads, retries=retries, progress=progress)
    record = {"source": url, "files": [a.filename], "size": path.stat().st_size}
    if a.md5:
        record["md5"] = a.md5
        say(f"{ds.name}: size and md5 {a.md5} match the published values")
    else:
        record["sha256"] = file_hash(path, "sha256")
        say(f"{ds.name}: no published checksum for this archive; its sha256 {record['sha256']} is recorded in {MARKER}")
    return [path], record


def _remove(files: list[Path], folders: list[Path]) -> None:
    """The archives (and Kaggle's finished-download records), then the folders left empty."""
    for path in files:
        path.unlink(missing_ok=True)
        Path(f"{path}.done").unlink(missing_ok=True)
        if path.suffix == ".zip":
            path.with_suffix(".done").unlink(missing_ok=True)
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _unpack(ds, files: list[Path], staging: Path, say: Callable[[str], None]) -> None:
    """Every fetched file into ``staging``: CSVs copied, archives extracted."""
    for path in files:
        if path.suffix.lower() == ".csv":
            shutil.copy2(path, staging / path.name)
        else:
            say(f"{ds.name}: extracting {path.name}")
            extract(path, staging)


def download(
    name: str,
    dest: str | os.PathLike,
    mirror: str | None = None,
    keep_archive: bool = False,
    retries: int = 3,
    progress: bool = True,
    test: bool = False,
    say: Callable[[str], None] = print,
) -> Path:
    """Fetch dataset ``name`` into ``dest/<folder>`` (see :data:`~.registry.DATASETS`); its path.

    Args:
        mirror: a base URL serving the same archive file names (a local mirror; tests).
        keep_archive: keep the downloaded archive in ``dest/.downloads`` after extraction.
        retries: tries per archive when the connection is cut (each resumes the last).
        test: Kaggle datasets: also the competition's test images.

    Raises:
        DownloadError: one line for each failure (no network, HTTP error or Kaggle 403, missing
            ``kaggle.json``, checksum mismatch, full disk, member escaping the destination...).
    """
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset '{name}'. Known: {', '.join(DATASETS)}")
    ds = DATASETS[name]
    dest = Path(dest).expanduser().resolve()
    target = dest / ds.folder
    if present(ds, dest) is not None:
        say(f"{ds.name}: already in {target} (delete the folder to fetch it again)")
        return target
    if target.exists():
        raise DownloadError(f"{target}: exists but has no {MARKER} (not a complete download by download.py): move it away or pick another --dest.")
    downloads, staging = dest / ".downloads", None
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for stale in dest.glob(f".{ds.folder}.partial-*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        files, record = _fetch(ds, downloads, mirror, retries, progress, test, say)
        staging = Path(tempfile.mkdtemp(prefix=f".{ds.folder}.partial-", dir=dest))
        _unpack(ds, files, staging, say)
        root = _locate(staging, ds.member)
        _finish(ds, root, {"dataset": ds.name, "task": ds.task, **record, "written": time.strftime("%Y-%m-%d %H:%M:%S")})
        os.rename(root, target)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DownloadError(
                f"no space left on the device holding {dest} ({ds.name}: the archive plus its extracted copy need room); "
                "what was downloaded is kept: free space and run the same command again."
            ) from None
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    if not keep_archive:
        _remove(files, [downloads / ds.name, downloads])
    say(f"{ds.name}: ready in {target}")
    return target
