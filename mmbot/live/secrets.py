"""API keys for live trading: from the environment or a 0600 file, never printed.

Sources, in order:

1. ``[live] api_key_file`` (or ``--key-file``): a TOML file with ``api_key`` and ``api_secret``.
   It must be a regular file readable by its owner only (no group/other permission bits,
   e.g. mode 0600 or 0400); anything else is refused.
2. The environment, with Bybit's usual variable names per environment:
   ``BYBIT_API_KEY``/``BYBIT_API_SECRET`` (mainnet), ``BYBIT_TESTNET_API_KEY``/
   ``BYBIT_TESTNET_API_SECRET`` (testnet), ``BYBIT_DEMO_API_KEY``/``BYBIT_DEMO_API_SECRET`` (demo).

``Credentials`` never shows the secret in ``repr``/``str``; ``mask`` renders a value as
``abcd…wxyz``. ``mask_process_output`` rewrites every occurrence of the key or secret in
everything the process writes to stdout/stderr (Nautilus' Rust logger included) and in the
file sinks it is given (Nautilus' JSON file log, through a FIFO), in a forked pump process that
outlives a crash of this one. Order events are masked at their source
(``adapters.bybit_live.MmbotBybitExecutionClient``), so the strategy, the risk audit log and the
recorder's ``orders.jsonl`` never hold a secret; ``scrub_files`` checks the run directory after
the run as a last line of defence.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ENV_VARS: dict[str, tuple[str, str]] = {
    "mainnet": ("BYBIT_API_KEY", "BYBIT_API_SECRET"),
    "testnet": ("BYBIT_TESTNET_API_KEY", "BYBIT_TESTNET_API_SECRET"),
    "demo": ("BYBIT_DEMO_API_KEY", "BYBIT_DEMO_API_SECRET"),
}


class SecretsError(ValueError):
    """Keys are missing or their file is unsafe; the message never contains a secret."""


def mask(value: str | None) -> str:
    """``abcd…wxyz``; short values are fully hidden."""
    if not value:
        return "<none>"
    if len(value) < 12:
        return "…" + "*" * 4
    return f"{value[:4]}…{value[-4:]}"


@dataclass(frozen=True)
class Credentials:
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    source: str = ""  # "env:BYBIT_TESTNET_API_KEY" or "file:/path"

    def __repr__(self) -> str:
        return f"Credentials(api_key={mask(self.api_key)}, api_secret={mask(self.api_secret)}, source={self.source})"

    __str__ = __repr__

    @property
    def masked_key(self) -> str:
        return mask(self.api_key)

    def secrets(self) -> list[str]:
        return [s for s in (self.api_key, self.api_secret) if s]


def check_file_private(path: Path) -> None:
    """Refuse a key file that is not a regular file or is accessible by group/others."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise SecretsError(f"{path}: cannot read key file: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretsError(f"{path}: key file is not a regular file")
    if st.st_mode & 0o077:
        raise SecretsError(
            f"{path}: key file mode is {stat.S_IMODE(st.st_mode):04o}; it must not be accessible by "
            f"group or others (chmod 600 {path})")


def read_key_file(path: Path) -> Credentials:
    path = Path(path)
    check_file_private(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise SecretsError(f"{path}: cannot read key file: {e}") from None
    except tomllib.TOMLDecodeError:
        # Never echo the parser message: it may quote the secret.
        raise SecretsError(f"{path}: key file is not valid TOML (expected api_key = \"...\", api_secret = \"...\")") from None
    key, secret = data.get("api_key"), data.get("api_secret")
    if not isinstance(key, str) or not key or not isinstance(secret, str) or not secret:
        raise SecretsError(f"{path}: key file needs non-empty api_key and api_secret strings")
    return Credentials(key.strip(), secret.strip(), f"file:{path}")


def load_credentials(env: str, key_file: str | Path | None = None, environ: dict | None = None) -> Credentials:
    """Keys for ``env`` (mainnet, testnet, demo): the key file when given, else the environment."""
    if env not in ENV_VARS:
        raise SecretsError(f"unknown environment {env!r} (known: {', '.join(ENV_VARS)})")
    if key_file:
        return read_key_file(Path(key_file))
    environ = os.environ if environ is None else environ
    kv, sv = ENV_VARS[env]
    key, secret = environ.get(kv, "").strip(), environ.get(sv, "").strip()
    if not key or not secret:
        missing = [n for n, v in ((kv, key), (sv, secret)) if not v]
        raise SecretsError(f"no API keys for {env}: set {' and '.join(missing)} or [live] api_key_file (a 0600 file)")
    return Credentials(key, secret, f"env:{kv}")


def mask_text(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s and s in text:
            text = text.replace(s, mask(s))
    return text


class _FdMasker:
    """Replace fd 1 and 2 with pipes; a forked pump process masks secrets and writes to the real fds.

    Catches everything, including output of native code (Nautilus' Rust logger). Lines are
    masked whole; a partial line is held until its newline (or the end).

    The pump is a separate process, not a thread, so that whatever this process writes just before
    it dies, a Rust panic's message before the abort included, still reaches the terminal: the
    kernel closes the dying process's pipe ends, the pump reads to EOF, masks and writes it out.

    ``file_sinks`` are ``(fifo_path, out_path)`` pairs: a FIFO is created at ``fifo_path`` for a
    native writer that logs to a file (Nautilus' JSON log), and the pump writes its masked content
    to ``out_path``. The secret never reaches the disk."""

    IDLE_DRAIN_S = 0.5  # after stdout/stderr end: drain the FIFOs until this long without data

    def __init__(self, secrets: list[str], file_sinks: list[tuple[Path, Path]] = ()) -> None:
        self.secrets = [s for s in secrets if s]
        self.file_sinks = [(Path(a), Path(b)) for a, b in file_sinks]
        self._saved: dict[int, int] = {}
        self._pid: int | None = None

    def start(self) -> None:
        import sys

        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pipes = {fd: os.pipe() for fd in (1, 2)}
        for fd in (1, 2):
            self._saved[fd] = os.dup(fd)
        for fifo, _ in self.file_sinks:
            fifo.parent.mkdir(parents=True, exist_ok=True)
            if fifo.exists() or fifo.is_symlink():
                fifo.unlink()
            os.mkfifo(fifo, 0o600)
        ready_r, ready_w = os.pipe()  # the pump says when its FIFOs have a reader (else a writer would block)
        pid = os.fork()
        if pid == 0:  # the pump
            code = 0
            try:
                import signal

                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_IGN)  # Ctrl-C hits the group: keep pumping to EOF
                signal.signal(signal.SIGPIPE, signal.SIG_IGN)
                keep = {r for r, _ in pipes.values()} | set(self._saved.values()) | {ready_w}
                for fd in range(3, _max_fd()):
                    if fd not in keep:
                        try:
                            os.close(fd)
                        except OSError:
                            pass
                _pump(self.secrets, [(pipes[fd][0], self._saved[fd]) for fd in (1, 2)], self.file_sinks,
                      self.IDLE_DRAIN_S, ready_w)
            except BaseException:  # noqa: BLE001
                code = 1
            finally:
                os._exit(code)
        os.close(ready_w)
        import select

        ok = select.select([ready_r], [], [], 10.0)[0] and os.read(ready_r, 1) == b"1"
        os.close(ready_r)
        if not ok:  # nothing redirected yet: the caller fails before any secret could be written
            for fd, (r, w) in pipes.items():
                os.close(r)
                os.close(w)
            for saved in self._saved.values():
                os.close(saved)
            self._saved.clear()
            os.waitpid(pid, 0)
            for fifo, _ in self.file_sinks:
                fifo.unlink(missing_ok=True)
            raise OSError("the output masker did not start (its FIFOs could not be opened)")
        self._pid = pid
        for fd, (r, w) in pipes.items():
            os.close(r)
            os.dup2(w, fd)
            os.close(w)

    def stop(self) -> None:
        import sys
        import time

        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)  # closes the pipe's last write end -> the pump drains and exits
        if self._pid is not None:
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                pid, _ = os.waitpid(self._pid, os.WNOHANG)
                if pid:
                    break
                time.sleep(0.02)
            self._pid = None
        for saved in self._saved.values():
            os.close(saved)
        self._saved.clear()
        for fifo, _ in self.file_sinks:
            try:
                fifo.unlink()
            except OSError:
                pass


def _max_fd() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 65536)
    except (ValueError, OSError):
        return 1024


def _pump(secrets: list[str], std: list[tuple[int, int]], file_sinks: list[tuple[Path, Path]], idle_s: float,
          ready_w: int | None = None) -> None:
    """The pump's loop (runs in the forked process; only os-level calls)."""
    import select

    enc = [(s.encode(), mask(s).encode()) for s in secrets]
    longest = max((len(s) for s, _ in enc), default=0)
    outs: dict[int, int | None] = {}   # read fd -> write fd (None once the writer failed)
    bufs: dict[int, bytes] = {}
    for r, w in std:
        outs[r], bufs[r] = w, b""
    fifo_fds, dummies = set(), []
    for fifo, out in file_sinks:
        r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        dummies.append(os.open(fifo, os.O_WRONLY))  # no EOF before the native writer opens it
        w = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        outs[r], bufs[r] = w, b""
        fifo_fds.add(r)
    if ready_w is not None:
        os.write(ready_w, b"1")
        os.close(ready_w)

    def emit(r: int, final: bool = False) -> None:
        buf = bufs[r]
        cut = len(buf) if final else buf.rfind(b"\n") + 1
        if not final and cut == 0 and len(buf) > 65536 + longest:
            # A huge line with no newline yet: mask the WHOLE buffer first, then hold back its last
            # longest-1 bytes, which may be the start of a secret the next read completes. (Cutting
            # the raw buffer and masking each part let a secret straddling the cut through in two
            # halves.) The raw bytes after the last match are unchanged by masking, so that start
            # is in the held tail; masked text re-masked later stays masked.
            for s, m in enc:
                buf = buf.replace(s, m)
            cut = len(buf) - max(longest - 1, 0)
        if not cut:
            bufs[r] = buf
            return
        part, bufs[r] = buf[:cut], buf[cut:]
        for s, m in enc:
            part = part.replace(s, m)
        w = outs[r]
        if w is None:
            return
        try:
            while part:
                n = os.write(w, part)
                part = part[n:]
        except OSError:  # the terminal or the file went away: keep draining, drop the output
            outs[r] = None

    live_std = {r for r, _ in std}
    open_fds = set(outs)
    while open_fds:
        draining = not live_std
        if draining and dummies:
            for d in dummies:
                os.close(d)
            dummies = []
        ready, _, _ = select.select(list(open_fds), [], [], idle_s if draining else None)
        if not ready:  # drained: no data for idle_s after stdout/stderr ended
            break
        for r in ready:
            try:
                chunk = os.read(r, 65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                bufs[r] += chunk
                emit(r)
                continue
            open_fds.discard(r)
            live_std.discard(r)
    for r in outs:
        emit(r, final=True)
    for r in fifo_fds:
        if outs[r] is not None:
            os.close(outs[r])


def mask_process_output(secrets: list[str], file_sinks: list[tuple[Path, Path]] = ()) -> _FdMasker:
    """Start masking stdout/stderr of this process (and the ``file_sinks``); call ``.stop()`` before exiting."""
    m = _FdMasker(secrets, file_sinks)
    m.start()
    return m


def scrub_files(root: Path, secrets: list[str], only: list[Path] | None = None) -> list[Path]:
    """Last line of defence after a run: mask any secret found in a file under ``root`` (gzip
    members included), rewriting it through a temporary file with the file's own mode. Returns the
    files that had one: each is a sink the run failed to mask at the source (a bug to report).

    Only files the run wrote: ``root`` is the run's own directory, or ``only`` names the files
    (the recorder's, in a ``record_dir`` the operator chose). A shared folder may hold the key
    file itself, a .env or shell history; rewriting them would destroy credentials and widen
    their mode (the old scrub left a 0600 key file 0644 and its key masked)."""
    import gzip

    enc = [(s.encode(), mask(s).encode()) for s in secrets if s]
    hit: list[Path] = []
    paths = sorted(Path(root).rglob("*")) if only is None else sorted(Path(p) for p in only)
    for path in paths:
        if not path.is_file() or path.is_symlink():
            continue
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        gz = raw[:2] == b"\x1f\x8b"
        try:
            data = gzip.decompress(raw) if gz else raw
        except (OSError, EOFError):
            data = raw  # a gzip member still being written: check the bytes as they are
            gz = False
        if not any(s in data for s, _ in enc):
            continue
        for s, m in enc:
            data = data.replace(s, m)
        tmp = path.with_name(path.name + ".scrub-tmp")
        tmp.write_bytes(gzip.compress(data) if gz else data)
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
        hit.append(path)
    return hit
