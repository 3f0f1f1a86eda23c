"""Where a live run's orders would go, and the mainnet gate decided by that.

``resolve_endpoints`` computes every URL the node will use exactly the way the NautilusTrader
1.231 Bybit clients do (``nautilus_trader/adapters/bybit/factories.py``, ``execution.py``,
``data.py`` and ``adapters/bybit_live.py``):

* REST (data and execution client, one shared HTTP client): ``base_url_http`` if set, else
  ``get_bybit_http_base_url(environment)`` (the factory fills it in; the Rust client itself
  would default to mainnet whatever the environment flag).
* private WebSocket: ``BybitWebSocketClient.new_private(environment, url=base_url_ws_private)``;
  Rust uses ``url`` when given, else ``get_bybit_ws_url_private(environment)``.
* trade WebSocket: the same with ``new_trade`` / ``get_bybit_ws_url_trade``; **not connected in
  the DEMO environment** (orders then go over REST).
* public WebSocket: ``base_url_ws_public`` (mmbot's data-client factory) or
  ``get_bybit_ws_url_public(LINEAR, environment)``; the recorder's raw tap the same URL or
  ``adapters.recorder.BYBIT_PUBLIC_LINEAR``.

``environment`` is ``[live] adapter_environment`` or, when empty, the ``--env`` label.

Each host is classified: ``loopback`` (``localhost``, 127.0.0.0/8, ``::1``), ``testnet``,
``demo``, ``mainnet`` (Bybit's production hosts) or ``other``. A loopback endpoint is trusted as
the local test exchange (tools/fake_bybit) only when the operator says so with ``[live]
test_exchange = true``; otherwise its class is ``undeclared-loopback``: a local port can forward
anywhere (an SSH tunnel, a local proxy, a stray dev server), and Nautilus' REST client (reqwest,
default policy) follows redirects with no way to turn that off, re-sending a signed order on a
307 with its X-BAPI-* headers to whatever host the ``Location`` names. ``test_exchange = true``
needs every order endpoint on loopback and is refused with ``--env mainnet`` or a config file
that says ``environment = "mainnet"`` or ``allow_mainnet = true``. **Mainnet, other and
undeclared-loopback are real money.** ``check_gate`` decides from the ORDER destinations (REST, private WS, trade WS when
used), never from the label alone: real-money destinations need ``--env mainnet``, the config
FILE's ``[live] environment = "mainnet"`` and ``allow_mainnet = true`` (never ``--set``) and
``--confirm-mainnet``; a label that disagrees with the destinations is refused.

Every used endpoint to a host that is not loopback must be TLS (``https://``, ``wss://``):
plaintext would carry the API key and every signature in clear, and on the trade WebSocket only
the ``auth`` message is signed, so anyone on the path could inject orders into the authenticated
connection. Plain ``http://``/``ws://`` is accepted only to a loopback address (this machine).

URLs are checked before that (``check_url``): scheme, a host, no user info (``http://127.0.0.1@api.bybit.com``
goes to api.bybit.com), no query, fragment, backslash, whitespace or control characters.
Hostnames compare lower-cased; Bybit's hostnames also without one trailing dot (the absolute DNS
name of the same host). ``loopback`` is only the exact name ``localhost`` and IP literals:
``localhost.`` is an absolute DNS name that the hosts file does not match, so the network's DNS
server answers it (with any address). Anything the classifier does not recognise exactly is
``other``, i.e. real money: an unusual spelling can only make the gate stricter, never route real
orders past it (``127.1``, ``0x7f.0.0.1``, ``localhost.``, percent-encoded or IDN hosts are
``other``).

Proxies: Nautilus' REST client (reqwest) takes a proxy from ``HTTP_PROXY``/``HTTPS_PROXY``/
``ALL_PROXY`` (either case) each time a client is built, for loopback hosts too, and skips the
hosts in ``NO_PROXY`` (probed on 1.231: per build, CIDR entries honoured, an empty ``NO_PROXY``
hides ``no_proxy``). A plaintext request to the loopback test exchange through a proxy hands the
signed order and the key header to the proxy host, which may send it anywhere.
``bypass_proxies_for_loopback`` (called by ``mmbot live`` before any client exists) adds the
loopback names to ``NO_PROXY`` and ``no_proxy``: loopback is always reached directly. Remote
endpoints are TLS only (above): through a proxy they get a ``CONNECT`` tunnel with the server's
certificate checked end to end, so a proxy can drop but not read or redirect them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

ENVIRONMENTS = ("testnet", "demo", "mainnet")
UNDECLARED = "undeclared-loopback"  # a loopback endpoint without [live] test_exchange = true
REAL_MONEY = frozenset({"mainnet", "other", UNDECLARED})
CLASS_NAMES = {"loopback": "loopback (declared test exchange)", "testnet": "Bybit testnet", "demo": "Bybit demo",
               "mainnet": "Bybit mainnet (REAL MONEY)", "other": "unknown host (treated as REAL MONEY)",
               UNDECLARED: "loopback, not declared the test exchange (treated as REAL MONEY: a local port can "
                           "forward anywhere)"}

# Exact hostnames (lower case, no trailing dot). Only the ones Nautilus' defaults and Bybit's docs
# name; any other host is "other" (real money), so this list can only relax the gate for hosts
# that are certainly not production.
TESTNET_HOSTS = frozenset({"api-testnet.bybit.com", "stream-testnet.bybit.com"})
DEMO_HOSTS = frozenset({"api-demo.bybit.com", "stream-demo.bybit.com"})
MAINNET_HOSTS = frozenset({"api.bybit.com", "stream.bybit.com", "api.bytick.com", "stream.bytick.com"})

URL_KEYS = ("base_url_http", "base_url_ws_public", "base_url_ws_private", "base_url_ws_trade")
ORDER_ROLES = ("rest", "ws_private", "ws_trade")


class EndpointError(ValueError):
    """A base URL is malformed or the gate refuses; one line."""


def check_url(key: str, url: str) -> None:
    """Refuse URL forms that route somewhere else than they appear to (one line, no secrets)."""
    want = ("http", "https") if key == "base_url_http" else ("ws", "wss")
    if re.search(r"[\s\\\x00-\x1f\x7f]", url):
        raise EndpointError(f"live.{key}: {url!r} contains whitespace, a backslash or a control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise EndpointError(f"live.{key}: {url!r} is not a valid URL ({e})") from None
    if parts.scheme.lower() not in want:
        raise EndpointError(f"live.{key}: must start with {' or '.join(s + '://' for s in want)}, got {url!r}")
    if "@" in parts.netloc:
        raise EndpointError(f"live.{key}: {url!r} has user info before '@': the host would be what follows it")
    if not parts.hostname:
        raise EndpointError(f"live.{key}: {url!r} has no host")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise EndpointError(f"live.{key}: {url!r} must not have a query or fragment")
    if port is not None and not 0 < port < 65536:
        raise EndpointError(f"live.{key}: {url!r} port out of range")


def url_host(url: str) -> str:
    """The host part as written (``classify_host`` normalises case and the trailing dot)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    if netloc.startswith("["):
        return netloc[1:netloc.index("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def classify_host(host: str) -> str:
    """loopback | testnet | demo | mainnet | other (see the module doc)."""
    host = host.lower()
    if host == "localhost":  # exactly: "localhost." goes to DNS (module doc)
        return "loopback"
    try:
        ip = ipaddress.ip_address(host)  # strict: dotted quad or IPv6 literal only
    except ValueError:
        ip = None
    if ip is not None:
        return "loopback" if ip.is_loopback else "other"
    if host.endswith("."):  # Bybit's names: the absolute form is the same DNS name
        host = host[:-1]
    if host in TESTNET_HOSTS:
        return "testnet"
    if host in DEMO_HOSTS:
        return "demo"
    if host in MAINNET_HOSTS:
        return "mainnet"
    return "other"


@dataclass(frozen=True)
class Endpoint:
    role: str          # rest | ws_private | ws_trade | ws_public | raw_tap
    url: str
    cls: str           # loopback | testnet | demo | mainnet | other
    source: str        # "live.base_url_http" or "nautilus default for <env>"
    used: bool = True  # ws_trade is not connected in the DEMO environment

    @property
    def real_money(self) -> bool:
        return self.cls in REAL_MONEY

    def to_json(self) -> dict:
        return {"url": self.url, "class": self.cls, "source": self.source, "used": self.used}


@dataclass(frozen=True)
class Endpoints:
    adapter_environment: str
    items: tuple[Endpoint, ...]
    test_exchange: bool = False  # [live] test_exchange: loopback endpoints are the local test exchange

    def get(self, role: str) -> Endpoint | None:
        return next((e for e in self.items if e.role == role), None)

    @property
    def orders(self) -> list[Endpoint]:
        """Where orders (and the authenticated account streams) go."""
        return [e for e in self.items if e.role in ORDER_ROLES and e.used]

    @property
    def real_money(self) -> bool:
        return any(e.real_money for e in self.orders)

    @property
    def order_class(self) -> str:
        """One word for the banner: the class of the order destinations."""
        classes = sorted({e.cls for e in self.orders})
        if self.real_money:
            return "mainnet" if classes == ["mainnet"] else "+".join(classes)
        return "+".join(classes)

    def to_json(self) -> dict:
        return {e.role: e.to_json() for e in self.items}


def resolve_endpoints(live, env: str, record: bool | None = None) -> Endpoints:
    """Every endpoint the node will use, as Nautilus' Bybit clients resolve them (module doc)."""
    from nautilus_trader.core import nautilus_pyo3 as pyo3
    from nautilus_trader.core.nautilus_pyo3 import BybitEnvironment, BybitProductType

    from adapters.recorder import BYBIT_PUBLIC_LINEAR

    adapter_env = live.adapter_environment or env
    if adapter_env not in ENVIRONMENTS:
        raise EndpointError(f"environment {adapter_env!r}: must be one of {', '.join(ENVIRONMENTS)}")
    benv = {"mainnet": BybitEnvironment.MAINNET, "testnet": BybitEnvironment.TESTNET,
            "demo": BybitEnvironment.DEMO}[adapter_env]
    for key in URL_KEYS:
        if getattr(live, key):
            check_url(key, getattr(live, key))
    default = f"nautilus default for {adapter_env}"
    test_exchange = bool(getattr(live, "test_exchange", False))

    def cls_of(url: str) -> str:
        cls = classify_host(url_host(url))
        return UNDECLARED if cls == "loopback" and not test_exchange else cls

    def ep(role: str, key: str, fallback: str, used: bool = True) -> Endpoint:
        url = getattr(live, key) if key else ""
        src = f"live.{key}" if url else default
        url = url or fallback
        return Endpoint(role, url, cls_of(url), src, used)

    items = [
        ep("rest", "base_url_http", pyo3.get_bybit_http_base_url(benv)),
        ep("ws_private", "base_url_ws_private", pyo3.get_bybit_ws_url_private(benv)),
        # BybitExecutionClient._connect skips the trade socket in DEMO (orders over REST).
        ep("ws_trade", "base_url_ws_trade", pyo3.get_bybit_ws_url_trade(benv), used=adapter_env != "demo"),
        ep("ws_public", "base_url_ws_public", pyo3.get_bybit_ws_url_public(BybitProductType.LINEAR, benv)),
    ]
    with_tap = getattr(live, "record", True) if record is None else record
    if with_tap:
        url = live.base_url_ws_public or BYBIT_PUBLIC_LINEAR[adapter_env]
        items.append(Endpoint("raw_tap", url, cls_of(url),
                              "live.base_url_ws_public" if live.base_url_ws_public else f"recorder default for {adapter_env}"))
    return Endpoints(adapter_env, tuple(items), test_exchange)


def _where(eps: list[Endpoint]) -> str:
    return ", ".join(f"{e.role}={e.url} ({e.cls})" for e in eps)


LOOPBACK_NO_PROXY = ("localhost", "127.0.0.0/8", "::1")  # what classify_host calls loopback
PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def bypass_proxies_for_loopback(environ=None) -> list[str]:
    """Put the loopback names into ``NO_PROXY`` and ``no_proxy`` (both: reqwest reads NO_PROXY
    first, even when empty), keeping their entries. Returns the names (never the values: they may
    hold credentials) of the proxy variables that are set, for the log."""
    import os

    environ = os.environ if environ is None else environ
    entries: list[str] = []
    for name in ("NO_PROXY", "no_proxy"):
        for item in environ.get(name, "").split(","):
            if item.strip() and item.strip() not in entries:
                entries.append(item.strip())
    entries += [x for x in LOOPBACK_NO_PROXY if x not in entries]
    environ["NO_PROXY"] = environ["no_proxy"] = ",".join(entries)
    return [v for v in PROXY_VARS if environ.get(v)]


PLAINTEXT_SCHEMES = ("http", "ws")


def plaintext_remote(eps: Endpoints) -> list[Endpoint]:
    """Used endpoints that would travel without TLS to a host that is not loopback (module doc)."""
    return [e for e in eps.items if e.used and urlsplit(e.url).scheme.lower() in PLAINTEXT_SCHEMES
            and classify_host(url_host(e.url)) != "loopback"]


def _require_tls(eps: Endpoints) -> None:
    plain = plaintext_remote(eps)
    if plain:
        raise EndpointError(f"plaintext endpoint(s) to a host that is not loopback: {_where(plain)}: the API key, "
                            "signatures and orders would travel in clear; use https:// and wss:// (plain http:// "
                            "and ws:// only to localhost, 127.0.0.0/8 or ::1)")


def check_gate(label: str, eps: Endpoints, *, file_environment: str, file_allow_mainnet: bool,
               confirm_mainnet: bool) -> None:
    """Refuse (``EndpointError``, one line) unless the label, the config file and the command all
    agree with where orders would go. ``file_*`` are read from the config FILE, not ``--set``."""
    orders = eps.orders
    if eps.test_exchange:
        marks = [what for what, on in (("--env mainnet", label == "mainnet"),
                                       ('[live] environment = "mainnet" in the config file', file_environment == "mainnet"),
                                       ("[live] allow_mainnet = true in the config file", file_allow_mainnet)) if on]
        if marks:
            raise EndpointError(f"live.test_exchange = true is refused with {' and '.join(marks)}: a mainnet "
                                "config never trusts a loopback endpoint as the test exchange")
        remote = [e for e in orders if e.cls != "loopback"]
        if remote:
            raise EndpointError(f"live.test_exchange = true but {_where(remote)} is not a loopback address: the "
                                "test exchange runs on this machine (set every order endpoint to it, or drop "
                                "test_exchange)")
    real = [e for e in orders if e.real_money]
    venues = {e.cls for e in orders} - {"loopback"}
    if real and venues - REAL_MONEY:
        raise EndpointError(f"endpoints mix real-money and test venues: {_where(orders)}")
    if label == "mainnet":
        if not real:
            raise EndpointError(f"--env mainnet but orders would go to {eps.order_class} endpoints "
                                f"({_where(orders)}): use --env {next(iter(venues), 'testnet')}")
        missing = [what for what, ok in (
            ("[live] environment = \"mainnet\" in the config file", file_environment == "mainnet"),
            ("[live] allow_mainnet = true in the config file", file_allow_mainnet),
            ("--confirm-mainnet on the command line", confirm_mainnet)) if not ok]
        if missing:
            raise EndpointError("mainnet refused: real money needs " + " and ".join(missing)
                                + f" (orders would go to {_where(real)})")
        _require_tls(eps)
        return
    if real:
        hint = ("; a loopback endpoint is trusted as the local test exchange only with [live] test_exchange = true"
                if any(e.cls == UNDECLARED for e in real) else "")
        raise EndpointError(f"mainnet refused: --env {label} but orders would go to real-money endpoints "
                            f"({_where(real)}); real money needs --env mainnet, a mainnet config file with "
                            f"[live] allow_mainnet = true and --confirm-mainnet{hint}")
    if venues and venues != {label}:
        raise EndpointError(f"--env {label} but orders would go to {'+'.join(sorted(venues))} endpoints "
                            f"({_where(orders)})")
    _require_tls(eps)
