"""The decode-once store: every item of a split decoded and resized once, at the stage's size, into
memory-mapped uint8 arrays that the loaders then read instead of the image files.

A dataset that can be stored has ``size``, ``store`` (None or a :class:`Store`), ``decode(i) ->``
:class:`StoredItem` (the very function its ``__getitem__`` uses without a store, so stored items are
bitwise the decoded ones), ``store_files(i)`` (the files item ``i`` is read from) and ``decode_id()``
(what else the decoding depends on). One store per split and size, under
``<store_dir>/<Dataset>-<HxW>-<key>/`` (``store_dir`` default: ``$LESSON3_CACHE/store``, i.e.
``~/.cache/lesson3/store``: never under the data root, which may be read-only): ``images.npy``
(N, H, W, C), ``masks.npy`` (N, H, W) where items have masks, ``orig.npy`` (N, 2: the files'
height, width) and ``manifest.json``, written last. ``key`` hashes the decoding, the size and every
file's path, byte size and modification time: a change to any of them builds a new store.

Building is atomic: into a hidden temporary folder, every file fsynced, the manifest last, then one
rename. A crash leaves only the temporary folder, which the next build removes. Processes (DDP
ranks, other runs) take a lock on the store (``datamodules.locks``: it dies with its process, so a
killed run never leaves it held): the first builds, the others wait, saying for which process, and
then read the same files. The free space is checked and the arrays' blocks are reserved before
anything is decoded, so a full disk falls back to decoding on the fly instead of failing later.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from .base import DataError, cache_dir
from .loaders import decode_all
from .locks import process_lock

STORE_VERSION = 2  # 2: images upright (EXIF orientation applied)
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class StoredItem(NamedTuple):
    """One item as its dataset decodes it: the resized uint8 image (H, W, C), the resized class-id
    mask (H, W) or None, and the file's (height, width) before resizing."""

    image: np.ndarray
    mask: np.ndarray | None
    orig: tuple[int, int]


class Stored:
    """What a storable dataset shares: ``decoded(i)`` reads its store where one is attached at the
    dataset's current size, else decodes the files (``decode``)."""

    store = None

    def decoded(self, i: int) -> StoredItem:
        store = self.store
        if store is not None and store.size == tuple(self.size):
            return store[i]
        return self.decode(i)


class StoreUnavailable(Exception):
    """The store cannot be written here (full disk, no permission): decode on the fly instead."""


class OverBudget(StoreUnavailable):
    """The store would not fit the disk budget (``store: auto``): decode on the fly instead."""


def store_root(store_dir: str | None = None) -> Path:
    """Where stores live: ``store_dir`` if given, else ``cache_dir()/store``."""
    return Path(store_dir).expanduser() if store_dir else cache_dir() / "store"


def fingerprint(ds, size: tuple[int, int]) -> str:
    """The store key of a dataset at a size: the decoding, the size, every file's path, bytes, mtime."""
    h = hashlib.sha1(json.dumps([STORE_VERSION, type(ds).__qualname__, ds.decode_id(), list(size)]).encode())
    for i in range(len(ds)):
        for p in ds.store_files(i):
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


class Store:
    """A built store, opened lazily (memory-mapped; pickles as its folder, so loader processes map
    the files themselves instead of copying the arrays)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / "manifest.json").read_text())
        self.size = tuple(self.manifest["size"])
        self.key = self.manifest["key"]
        self._arrays = None

    def __getstate__(self):
        return {**self.__dict__, "_arrays": None}

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        if self._arrays is None:
            masks = self.folder / "masks.npy"
            self._arrays = (np.load(self.folder / "images.npy", mmap_mode="r"), np.load(masks, mmap_mode="r") if masks.is_file() else None,
                            np.load(self.folder / "orig.npy"))
        return self._arrays

    def __len__(self) -> int:
        return int(self.manifest["items"])

    def __getitem__(self, i: int) -> StoredItem:
        images, masks, orig = self.arrays()
        return StoredItem(np.array(images[i]), None if masks is None else np.array(masks[i]), (int(orig[i, 0]), int(orig[i, 1])))

    def check(self) -> "Store":
        """Opened and the right shape (else ValueError/OSError: rebuild)."""
        images, masks, orig = self.arrays()
        n, (h, w) = len(self), self.size
        if images.shape[:3] != (n, h, w) or orig.shape != (n, 2) or (masks is not None and masks.shape != (n, h, w)):
            raise ValueError(f"{self.folder}: arrays do not match the manifest")
        if self.manifest.get("rows_sha256") != rows_digest(images, masks, orig):
            raise ValueError(f"{self.folder}: contents changed since it was built")
        return self


def rows_digest(images: np.ndarray, masks: np.ndarray | None, orig: np.ndarray, rows: int = 16) -> str:
    """SHA-256 of ``rows`` evenly spread items (images, masks, sizes): a store changed in place (same
    size and time) is noticed at the cost of reading a few items, not the whole store."""
    h = hashlib.sha256()
    for i in sorted({int(i) for i in np.linspace(0, len(images) - 1, min(rows, len(images)))}):
        for a in (images, masks, orig):
            if a is not None:
                h.update(np.ascontiguousarray(a[i]).tobytes())
    return h.hexdigest()


def estimate_bytes(ds, size: tuple[int, int]) -> int:
    """Bytes of a split's store at ``size``, from its first item."""
    first = ds.decode(0)
    per = int(np.prod(first.image.shape)) + (int(np.prod(first.mask.shape)) if first.mask is not None else 0)
    return per * len(ds)


def open_store(folder: Path, key: str) -> Store | None:
    """The complete store in ``folder`` with this key, or None (absent, half-written or damaged)."""
    if not (folder / "manifest.json").is_file():
        return None
    try:
        store = Store(folder)
        return store.check() if store.key == key and store.manifest.get("version") == STORE_VERSION else None
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None


def get_store(ds, size: tuple[int, int], root: Path, workers: int = 0, what: str = "", budget: float | None = None,
              key: str | None = None) -> Store:
    """The store of ``ds`` at ``size`` under ``root``, built first if needed (under the lock).

    Args:
        budget: the most bytes a new store may take (None: no limit but the free space).
        key: ``fingerprint(ds, size)`` where the caller has it (every file is stat'ed for it).

    Raises:
        DataError: an item could not be decoded (naming its file); nothing usable is left.
        OverBudget: a new store would take more than ``budget`` bytes.
        StoreUnavailable: the disk filled up or the folder is not writable.
    """
    key = key or fingerprint(ds, size)
    folder = root / f"{type(ds).__name__}-{size[0]}x{size[1]}-{key}"
    found = open_store(folder, key)
    if found is not None:
        return found
    if budget is not None and (need := estimate_bytes(ds, size)) > budget:
        raise OverBudget(f"{what}: {need / 1e9:.1f} GB, over the budget of {budget / 1e9:g} GB (--data.init_args.store_budget_gb)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        waiting = lambda pid: rank_zero_info(f"decode-once store {what}: waiting for process {pid}, which is building it ({folder})")  # noqa: E731
        with process_lock(root / f".{folder.name}.lock", waiting=waiting):
            found = open_store(folder, key)  # another process built it while this one waited
            if found is not None:
                return found
            shutil.rmtree(folder, ignore_errors=True)  # damaged or half there: built again
            for stale in root.glob(f".{folder.name}.tmp-*"):  # a crashed build's leftovers
                shutil.rmtree(stale, ignore_errors=True)
            build(ds, size, folder, key, workers, what)
    except OSError as e:
        if e.errno in FULL_DISK or e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise StoreUnavailable(f"{root}: {os.strerror(e.errno)}") from e
        raise
    return Store(folder).check()


def _progress(total: int, what: str):
    from tqdm.auto import tqdm

    quiet = not rank_zero_only.rank == 0
    return tqdm(total=total, desc=f"decode-once store {what}".strip(), unit="img", disable=quiet, leave=False, mininterval=1 if sys.stderr.isatty() else 30)


def build(ds, size: tuple[int, int], folder: Path, key: str, workers: int = 0, what: str = "") -> None:
    """Decode every item into a temporary folder, fsync, write the manifest, rename to ``folder``."""
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        first, n, (h, w) = ds.decode(0), len(ds), size
        need, free = (first.image.nbytes + (first.mask.nbytes if first.mask is not None else 0)) * n, shutil.disk_usage(tmp).free
        if need > 0.95 * free:
            raise StoreUnavailable(f"{folder.parent}: {need / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free")
        images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (n, h, w, first.image.shape[2]))
        masks = np.lib.format.open_memmap(tmp / "masks.npy", "w+", np.uint8, (n, h, w)) if first.mask is not None else None
        for name in ("images.npy", "masks.npy"):  # the blocks now: a full disk is an OSError here, not a SIGBUS mid-write
            _reserve(tmp / name)
        orig = np.zeros((n, 2), np.int32)
        with _progress(n, what) as bar:
            for i, d in decode_all(ds, workers):
                if d.image.shape != images.shape[1:] or (masks is not None and (d.mask is None or d.mask.shape != masks.shape[1:])):
                    raise DataError(f"{ds.store_files(i)[0]}: decoded to {d.image.shape}, unlike the split's first image {images.shape[1:]}.")
                images[i] = d.image
                if masks is not None:
                    masks[i] = d.mask
                orig[i] = d.orig
                bar.update(1)
        arrays = [images] + ([masks] if masks is not None else [])
        for a in arrays:
            a.flush()
        del images, masks, arrays
        np.save(tmp / "orig.npy", orig)
        read = [np.load(tmp / f, mmap_mode="r") if (tmp / f).is_file() else None for f in ("images.npy", "masks.npy")]
        manifest = {"version": STORE_VERSION, "key": key, "rows_sha256": rows_digest(*read, orig), "size": list(size), "items": n, "dataset": type(ds).__qualname__,
                    "decode": ds.decode_id(), "first_file": str(ds.store_files(0)[0]), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for name in ("images.npy", "masks.npy", "orig.npy"):
            _fsync(tmp / name)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        _fsync(tmp / "manifest.json")
        os.rename(tmp, folder)
        _fsync(folder.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _reserve(path: Path) -> None:
    """Allocate ``path``'s blocks (a memory map's file is sparse until written)."""
    if path.exists():
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        finally:
            os.close(fd)


def _fsync(path: Path) -> None:
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def attach(ds, size: tuple[int, int], root: Path, workers: int = 0, what: str = "", budget: float | None = None) -> Store | None:
    """Set ``ds.store`` to its store at ``size`` (built if needed); over the budget, one info line
    and None; on a full disk or an unwritable folder, one warning and None (the loaders then
    decode on the fly)."""
    current, key = getattr(ds, "store", None), fingerprint(ds, size)
    if current is not None and current.size == tuple(size) and current.key == key:
        return current
    if getattr(ds, "store_refused", None) == (tuple(size), key):  # said once: no second build attempt per loader
        ds.store = None
        return None
    try:
        ds.store = get_store(ds, size, root, workers, what, budget, key)
    except OverBudget as e:
        ds.store, ds.store_refused = None, (tuple(size), key)
        rank_zero_info(f"decode-once store not built ({e}); decoding the images on the fly.")
    except StoreUnavailable as e:
        ds.store, ds.store_refused = None, (tuple(size), key)
        rank_zero_warn(f"decode-once store not written ({e}); decoding the images on the fly instead (--data.init_args.store false silences this).")
    return ds.store
