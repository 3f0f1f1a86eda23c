"""One live instance per account and instrument: an ``flock`` on a lock file.

A market maker must never run twice on the same account and instrument (two ladders would
trade against each other and double every limit). ``acquire`` takes an exclusive,
non-blocking ``flock`` on ``<lock_dir>/mmbot-<env>-<account>-<symbol>.lock`` and writes the
holder's pid into it. The kernel releases the lock when the process dies, however it dies, so
a stale file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path


class LockHeld(RuntimeError):
    """Another process holds the lock."""


def lock_path(lock_dir: str | Path, env: str, account: str, instrument_id: str) -> Path:
    safe = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "_", s) or "default"  # noqa: E731
    return Path(lock_dir) / f"mmbot-{safe(env)}-{safe(account)}-{safe(instrument_id)}.lock"


class LiveLock:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> LiveLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise LockHeld(f"another mmbot live instance (pid {holder}) holds {self.path}: "
                           "one instance per account and instrument") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> LiveLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
