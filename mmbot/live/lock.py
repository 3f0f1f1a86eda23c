"""One live instance per API key: an ``flock`` on a lock file.

A market maker must never run twice on the same account: two processes on one API key share
trader id ``MMBOT-<tag>`` (``live_trader_tag``: derived from the key) and its client order ids, each one's stop-time cancel-all and startup
policy cancel the other's orders, and every limit is doubled. The free-text ``[live] account``
label cannot tell that, so ``key_lock_path`` keys the lock by a hash of the API key ALONE: a
Bybit key belongs to exactly one account in one environment, while the endpoints that reach it
have many spellings (``127.0.0.1``/``localhost``, a gateway or proxy host in front of
``api.bybit.com``), so hashing them in gave one key two locks. The key itself never appears in
the file name, the file or a message: ``mmbot-key-<16 hex of sha256>.lock``.

``acquire`` takes an exclusive, non-blocking ``flock`` and writes the holder's pid, account label
and instrument into the file. The kernel releases the lock when the process dies, however it
dies, so a stale file never blocks a restart. Shadow mode has no key: ``lock_path`` (environment,
account label, instrument).

A file can be deleted while its lock is held (``rm -rf runs/``, a tmp cleaner on a lock_dir in
/tmp): the next process would create a new file at the same path, lock that inode and run beside
the holder. So on Linux the holder also binds an abstract unix socket named by a hash of the lock
file's real path (``_socket_name``): it has no file to delete, the kernel frees it when the process
dies, and a second bind of the name fails. Its scope is the network namespace; processes in
separate namespaces (containers) sharing a lock_dir still have the flock, not this.

A key lock's socket is named by the key digest ALONE, not by the lock file's path: ``live.lock_dir``
is relative to the config file, so the same key used from a copy of the config elsewhere (a second
checkout) or with ``--set live.lock_dir=...`` took a second lock and two processes traded one
account (hostile review 26, F7). On Linux one API key is one instance per host (network
namespace), whatever the lock_dir; the flock still guards the same lock_dir across namespaces.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import socket
import stat
import sys
from pathlib import Path


class LockHeld(RuntimeError):
    """Another process holds the lock."""


class LockUnusable(OSError):
    """The lock file cannot be created or used (lock_dir under a file, unwritable, the lock path a
    directory, ...). The message names the path and the problem, one line; callers add the
    ``live.lock_dir`` key and where it came from."""


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s) or "default"


def lock_path(lock_dir: str | Path, env: str, account: str, instrument_id: str) -> Path:
    """Shadow mode (no API key): one instance per environment, account label and instrument."""
    return Path(lock_dir) / f"mmbot-{_safe(env)}-{_safe(account)}-{_safe(instrument_id)}.lock"


class LockSet:
    """Several locks taken together (all, or none held): a shadow ``[portfolio]`` takes one
    ``lock_path`` per instrument, so two shadows on one account label cannot share an instrument
    whatever order or subset each lists (hostile review 26, F12), and a one-instrument shadow of
    the same instrument conflicts with it too. Taken in sorted path order (no two processes wait on
    each other in opposite orders; the locks never block anyway)."""

    def __init__(self, locks: list[LiveLock]) -> None:
        self.locks = sorted(locks, key=lambda lock: str(lock.path))
        self._held: list[LiveLock] = []

    def acquire(self) -> LockSet:
        try:
            for lock in self.locks:
                lock.acquire()
                self._held.append(lock)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        while self._held:
            self._held.pop().release()


def shadow_locks(lock_dir: str | Path, env: str, account: str, instrument_ids: list[str]) -> LockSet:
    """Shadow mode: one ``lock_path`` per instrument (module doc; ``LockSet``)."""
    return LockSet([LiveLock(lock_path(lock_dir, env, account, iid)) for iid in dict.fromkeys(instrument_ids)])


def key_digest(api_key: str) -> str:
    """16 hex digits of sha256 over a domain tag and the key (not reversible to the key: Bybit
    keys are 18+ random characters)."""
    h = hashlib.sha256(b"mmbot-live-lock\0" + api_key.encode())
    return h.hexdigest()[:16]


def key_lock_path(lock_dir: str | Path, api_key: str) -> Path:
    """Live modes: one instance per API key, whatever the account label or the endpoints' spelling."""
    return Path(lock_dir) / f"mmbot-key-{key_digest(api_key)}.lock"


def _socket_name(path: Path) -> bytes:
    """Abstract unix socket name (leading NUL: no file) for the lock file ``path``: the real path
    of its directory (symlinked spellings are one lock) and its name, hashed to a fixed length."""
    if re.fullmatch(r"mmbot-key-[0-9a-f]{16}\.lock", path.name):  # one per API key, any lock_dir (module doc)
        real = path.name
    else:
        real = os.path.join(os.path.realpath(path.parent), path.name)
    return b"\0mmbot-lock-" + hashlib.sha256(real.encode()).hexdigest()[:32].encode()


class LiveLock:
    def __init__(self, path: Path, what: str = "account and instrument", info: str = "") -> None:
        self.path = Path(path)
        self.what = what      # for the refusal message: "API key", ...
        self.info = info      # written after the pid: account label, instrument (never the key)
        self._fd: int | None = None
        self._sock: socket.socket | None = None  # Linux: the abstract socket that outlives a deleted file

    def acquire(self) -> LiveLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: never open (then truncate and overwrite) the target of a symlink planted
            # under the lock's predictable name.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            problem = ("a symbolic link (the lock never writes through a link; remove it)"
                       if e.errno == errno.ELOOP else e.strerror or str(e))
            raise LockUnusable(f"cannot use the lock file {self.path}: {problem}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            # A FIFO, device or socket under the name, or a hard link to another file: writing the
            # pid would overwrite whatever it is.
            os.close(fd)
            raise LockUnusable(f"cannot use the lock file {self.path}: "
                               f"{'not a regular file' if not stat.S_ISREG(st.st_mode) else 'a hard link to another file'}"
                               " (remove it)")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 256).decode(errors="replace").split()
            finally:
                os.close(fd)
            who = f"pid {holder[0]}" if holder else "pid ?"
            if len(holder) > 1:
                who += ", " + " ".join(holder[1:])
            raise LockHeld(f"another mmbot live instance ({who}) holds {self.path}: "
                           f"one instance per {self.what}") from None
        if sys.platform.startswith("linux"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.bind(_socket_name(self.path))
            except OSError as e:
                sock.close()
                os.close(fd)
                if e.errno != errno.EADDRINUSE:
                    raise LockUnusable(f"cannot use the lock file {self.path}: abstract socket: "
                                       f"{e.strerror or e}") from None
                # The flock was free but the name is bound: the holder's file was deleted or replaced,
                # or (a key lock) the holder locked the same key in another lock_dir.
                raise LockHeld(f"another mmbot live instance holds {self.path} (its lock file was deleted or "
                               f"replaced while it runs, or it holds the same lock in another lock_dir; pid "
                               f"unknown): one instance per {self.what}") from None
            self._sock = sock
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}{' ' + self.info if self.info else ''}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
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
