"""Extraction that refuses members escaping the destination: tar (.tgz, .tar.gz, .tar), zip, 7z.

Every member name is checked before anything is written: absolute paths, ``..`` that climbs out,
links (symbolic or hard) whose target lands outside, and devices or FIFOs are refused with one line
naming the archive and the member. tar extraction also runs with Python's ``data`` filter. A 7z
holding a ``.tar`` (Kaggle's ``train-jpg.tar.7z``) is unpacked in two steps, the tar checked too.
"""

from __future__ import annotations

import posixpath
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from .fetch import DownloadError


def escapes(name: str) -> bool:
    """Whether an archive member name would land outside the folder it is extracted into."""
    name = name.replace("\\", "/")
    if name.startswith("/") or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        return True
    norm = posixpath.normpath(name)
    return norm == ".." or norm.startswith("../")


def _refuse(archive: Path, member: str, why: str) -> DownloadError:
    return DownloadError(f"{archive}: member '{member}' {why}; refusing to extract this archive (nothing was extracted).")


def check_tar(path: Path, tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The members of ``tar``, all checked (see the module docstring)."""
    members = tar.getmembers()
    for m in members:
        if escapes(m.name):
            raise _refuse(path, m.name, "points outside the destination")
        if m.issym():
            target = posixpath.join(posixpath.dirname(m.name), m.linkname)
            if m.linkname.startswith("/") or escapes(target):
                raise _refuse(path, m.name, f"is a symbolic link to '{m.linkname}', outside the destination")
        elif m.islnk():
            if escapes(m.linkname):
                raise _refuse(path, m.name, f"is a hard link to '{m.linkname}', outside the destination")
        elif not (m.isfile() or m.isdir()):
            raise _refuse(path, m.name, "is a device or FIFO")
    return members


def extract_tar(path: Path, into: Path) -> None:
    try:
        with tarfile.open(path) as tar:
            members = check_tar(path, tar)
            tar.extractall(into, members=members, filter="data")
    except tarfile.FilterError as e:
        raise DownloadError(f"{path}: {e}; refusing to extract this archive.") from e
    except (tarfile.TarError, EOFError, zipfile.BadZipFile) as e:
        raise DownloadError(f"{path}: damaged tar archive ({e}); delete it to download it afresh.") from e


def extract_zip(path: Path, into: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            for info in infos:
                if escapes(info.filename):
                    raise _refuse(path, info.filename, "points outside the destination")
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise _refuse(path, info.filename, "is a symbolic link")
            zf.extractall(into, members=infos)  # CRCs checked as each member is read
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{path}: damaged zip archive ({e}); delete it to download it afresh.") from e


def extract_7z(path: Path, into: Path) -> None:
    try:
        import py7zr
    except ImportError as e:  # pragma: no cover - py7zr is in requirements.txt
        raise DownloadError(f"{path}: 7z archives need py7zr: pip install py7zr") from e
    try:
        with py7zr.SevenZipFile(path, mode="r") as z:
            for info in z.list():
                if escapes(info.filename):
                    raise _refuse(path, info.filename, "points outside the destination")
                if info.is_symlink:
                    raise _refuse(path, info.filename, "is a symbolic link")
        with py7zr.SevenZipFile(path, mode="r") as z:
            z.extractall(path=into)
    except (py7zr.exceptions.Bad7zFile, py7zr.exceptions.CrcError, py7zr.exceptions.ArchiveError, py7zr.exceptions.DecompressionError) as e:
        raise DownloadError(f"{path}: damaged 7z archive ({e}); delete it to download it afresh.") from e
    for inner in sorted(into.glob("*.tar")):  # Kaggle's .tar.7z: a tar inside
        extract_tar(inner, into)
        inner.unlink()


def extract(path: Path, into: Path) -> None:
    """Extract ``path`` (by its name: .tgz/.tar.gz/.tar, .zip, .7z) into the folder ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    if name.endswith(".zip"):
        extract_zip(path, into)
    elif name.endswith(".7z"):
        extract_7z(path, into)
    elif name.endswith((".tgz", ".tar.gz", ".tar")):
        extract_tar(path, into)
    else:
        raise DownloadError(f"{path}: not an archive this tool extracts (.tgz, .tar.gz, .tar, .zip, .7z).")
