"""API keys for live trading: from the environment or a 0600 file, never printed.

Sources, in order:

1. ``[live] api_key_file`` (or ``--key-file``): a TOML file with ``api_key`` and ``api_secret``.
   It must be a regular file readable by its owner only (no group/other permission bits,
   e.g. mode 0600 or 0400); anything else is refused.
2. The environment, with Bybit's usual variable names per environment:
   ``BYBIT_API_KEY``/``BYBIT_API_SECRET`` (mainnet), ``BYBIT_TESTNET_API_KEY``/
   ``BYBIT_TESTNET_API_SECRET`` (testnet), ``BYBIT_DEMO_API_KEY``/``BYBIT_DEMO_API_SECRET`` (demo).

``Credentials`` never shows the secret in ``repr``/``str``; ``mask`` renders a value as
``abcd…wxyz``. ``MaskingStream`` / ``mask_process_output`` rewrite every occurrence of the key
or secret in everything the process writes to stdout/stderr (including Nautilus' Rust logger).
"""

from __future__ import annotations

import os
import stat
import threading
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
    """Replace fd 1 and 2 with pipes; a thread masks secrets and writes to the real fds.

    Catches everything, including output of native code (Nautilus' Rust logger). Lines are
    masked whole; a partial line is held until its newline (or shutdown)."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = [s for s in secrets if s]
        self._saved: dict[int, int] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        import sys

        for fd in (1, 2):
            (sys.stdout if fd == 1 else sys.stderr).flush()
            saved = os.dup(fd)
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            self._saved[fd] = saved
            t = threading.Thread(target=self._pump, args=(r, saved), daemon=True, name=f"mask-fd{fd}")
            t.start()
            self._threads.append(t)

    def _pump(self, r: int, out: int) -> None:
        buf = b""
        enc = [(s.encode(), mask(s).encode()) for s in self.secrets]
        longest = max((len(s) for s, _ in enc), default=0)
        while True:
            try:
                chunk = os.read(r, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            cut = buf.rfind(b"\n") + 1
            if cut == 0 and len(buf) > 65536 + longest:  # a huge line: flush all but a secret's length
                cut = len(buf) - longest
            if cut:
                part, buf = buf[:cut], buf[cut:]
                for s, m in enc:
                    part = part.replace(s, m)
                os.write(out, part)
        for s, m in enc:
            buf = buf.replace(s, m)
        if buf:
            os.write(out, buf)
        os.close(r)

    def stop(self) -> None:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)  # closes the pipe's last write end -> the pump drains and stops
        for t in self._threads:
            t.join(timeout=5)
        for saved in self._saved.values():
            os.close(saved)
        self._saved.clear()


def mask_process_output(secrets: list[str]) -> _FdMasker:
    """Start masking stdout/stderr of this process; call ``.stop()`` before exiting."""
    m = _FdMasker(secrets)
    m.start()
    return m
