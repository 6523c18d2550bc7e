"""File locks that die with the process holding them.

POSIX record locks (``fcntl.lockf``), not ``flock``: an ``flock`` belongs to the open file and is
shared with every forked child, so a loader worker that outlived a killed run kept the store's lock
and the next run waited forever. A record lock belongs to the process alone: forked children do
not inherit it, the kernel drops it when the process dies (``kill -9`` included), and ``F_GETLK``
names the process holding it. Record locks do not exclude threads of one process from each other:
:func:`process_lock` adds a thread lock per path for that.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

_FLOCK = "hhqqi4x"  # Linux's struct flock: type, whence, start, len, pid
_THREADS: dict[str, threading.Lock] = {}
_HELD: dict[str, int] = {}  # hold(): path -> open descriptor (the lock lives while it is open)


class Busy(Exception):
    """The lock is held by another process (``pid``; None where the system does not say)."""

    def __init__(self, path: Path, pid: int | None):
        super().__init__(f"{path} is locked by process {pid}")
        self.path, self.pid = path, pid


def holder(fd: int) -> int | None:
    """The process holding a lock on the open file ``fd`` that would block ours, or None."""
    got = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
    kind, _, _, _, pid = struct.unpack(_FLOCK, got)
    return None if kind == fcntl.F_UNLCK else pid


def _lock(fd: int, path: Path, blocking: bool, waiting: Callable[[int | None], None] | None) -> None:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        pid = holder(fd)
        if not blocking:
            raise Busy(path, pid) from None
        if waiting is not None:
            waiting(pid)
        fcntl.lockf(fd, fcntl.LOCK_EX)


@contextmanager
def process_lock(path: Path, blocking: bool = True, waiting: Callable[[int | None], None] | None = None):
    """An exclusive lock on ``path`` (created) for this thread, released on exit or when the process dies.

    Args:
        blocking: wait for the holder; False raises :class:`Busy` at once.
        waiting: called with the holder's PID before waiting (e.g. to say who is being waited for).
    """
    path = Path(path)
    guard = _THREADS.setdefault(str(path.resolve()), threading.Lock())
    if not guard.acquire(blocking=blocking):
        raise Busy(path, os.getpid())
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            _lock(fd, path, blocking, waiting)
            yield
        finally:
            os.close(fd)  # drops the record lock
    finally:
        guard.release()


def hold(path: Path) -> None:
    """Take the lock on ``path`` now and keep it until :func:`release` or the process ends (a run
    folder in use); :class:`Busy` where another process holds it. Taking it again in the same process
    is a no-op."""
    key = str(Path(path).resolve())
    if key in _HELD:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _lock(fd, Path(path), blocking=False, waiting=None)
    except BaseException:
        os.close(fd)
        raise
    _HELD[key] = fd


def release(path: Path) -> None:
    fd = _HELD.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)
