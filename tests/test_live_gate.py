"""The mainnet gate is decided by where orders would go (mmbot/live/endpoints.py).

``GATE_TABLE`` is the bypass table of docs/runbook.md ("Mainnet gate"): each row a way to reach
real money (or a test venue) and the outcome the gate must give. ``test_live_gate_mutants_are_caught``
breaks the gate on purpose, one way at a time, and shows some row then fails. Two rows also run
through the CLI, where the refusal must come before any connection, lock or banner.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mmbot.live.endpoints as E
from mmbot.config.backtest import ConfigError
from mmbot.live.node import LiveRefused, check_environment, load_live_config
from tools.fake_bybit.auth import process_api_key

REPO = Path(__file__).resolve().parent.parent
TESTNET = REPO / "config" / "testnet.toml"
MAINNET = REPO / "config" / "mainnet.toml"
LOOP = ["live.base_url_http=http://127.0.0.1:9", "live.base_url_ws_private=ws://127.0.0.1:9/v5/private",
        "live.base_url_ws_trade=ws://127.0.0.1:9/v5/trade", "live.base_url_ws_public=ws://127.0.0.1:9/v5/public/linear"]
TEST_EXCHANGE = ["live.test_exchange=true"]  # the loopback endpoints are the local test exchange


def _mainnet_allowed(tmp: Path) -> Path:
    """config/mainnet.toml with allow_mainnet = true, as an operator would set it."""
    text = MAINNET.read_text().replace("allow_mainnet = false", "allow_mainnet = true")
    assert "allow_mainnet = true" in text
    p = tmp / "mainnet-allowed.toml"
    p.write_text(text.replace('"../', f'"{REPO}/'))
    return p


# id, config ("testnet" | "mainnet" | "mainnet-allowed"), --env, --set overrides, --confirm-mainnet, expected:
#   "refused:<text in the message>" or "allowed:<class of the order endpoints>"
GATE_TABLE = [
    ("label-only: adapter_environment=mainnet under --env testnet", "testnet", "testnet",
     ["live.adapter_environment=mainnet"], False, "refused:orders would go to real-money endpoints"),
    ("--set live.allow_mainnet=true --confirm-mainnet with testnet.toml", "testnet", "mainnet",
     ["live.allow_mainnet=true"], True, "refused:cannot come from --set"),
    ("--set live.allow_mainnet=true --confirm-mainnet with mainnet.toml as shipped", "mainnet", "mainnet",
     ["live.allow_mainnet=true"], True, "refused:cannot come from --set"),
    ("--env mainnet --confirm-mainnet with testnet.toml", "testnet", "mainnet", [], True,
     'refused:[live] environment = "mainnet" in the config file'),
    ("--env mainnet --confirm-mainnet, mainnet.toml as shipped", "mainnet", "mainnet", [], True,
     "refused:allow_mainnet = true in the config file"),
    ("mainnet.toml with allow_mainnet, no --confirm-mainnet", "mainnet-allowed", "mainnet", [], False,
     "refused:--confirm-mainnet"),
    ("base_url_http = the mainnet REST host", "testnet", "testnet", ["live.base_url_http=https://api.bybit.com"], False,
     "refused:mix real-money and test venues"),
    ("all order URLs on mainnet hosts under --env testnet", "testnet", "testnet",
     ["live.base_url_http=https://api.bybit.com", "live.base_url_ws_private=wss://stream.bybit.com/v5/private",
      "live.base_url_ws_trade=wss://stream.bybit.com/v5/trade"], False, "refused:mainnet refused"),
    ("trade WS alone on mainnet", "testnet", "testnet", LOOP[:2] + ["live.base_url_ws_trade=wss://stream.bybit.com/v5/trade"],
     False, "refused:mainnet refused"),
    ("mirror host api.bytick.com", "testnet", "testnet", ["live.base_url_http=https://api.bytick.com"] + LOOP[1:3], False,
     "refused:mainnet refused"),
    ("upper-case mainnet host", "testnet", "testnet", ["live.base_url_http=HTTPS://API.BYBIT.COM"] + LOOP[1:3], False,
     "refused:mainnet refused"),
    ("trailing-dot mainnet host", "testnet", "testnet", ["live.base_url_http=https://api.bybit.com."] + LOOP[1:3], False,
     "refused:mainnet refused"),
    ("upper-case trailing-dot testnet host is still testnet", "testnet", "testnet",
     ["live.base_url_http=HTTPS://API-TESTNET.BYBIT.COM."], False, "allowed:testnet"),
    ("userinfo http://127.0.0.1@api.bybit.com", "testnet", "testnet", ["live.base_url_http=http://127.0.0.1@api.bybit.com"],
     False, "refused:user info"),
    ("userinfo with port http://127.0.0.1:80@api.bybit.com", "testnet", "testnet",
     ["live.base_url_http=http://127.0.0.1:80@api.bybit.com"], False, "refused:user info"),
    ("backslash http://127.0.0.1\\@api.bybit.com", "testnet", "testnet",
     ["live.base_url_http=http://127.0.0.1\\@api.bybit.com"], False, "refused:backslash"),
    ("localhost.evil.com is not loopback", "testnet", "testnet",
     ["live.base_url_http=http://localhost.evil.com:9"] + LOOP[1:3], False, "refused:mainnet refused"),
    ("localhost. (absolute DNS name, not the hosts file) is not loopback", "testnet", "testnet",
     ["live.base_url_http=http://localhost.:9"] + LOOP[1:3] + TEST_EXCHANGE, False, "refused:is not a loopback address"),
    ("127.0.0.1.nip.io is not loopback", "testnet", "testnet",
     ["live.base_url_http=http://127.0.0.1.nip.io:9"] + LOOP[1:3], False, "refused:mainnet refused"),
    ("shorthand 127.1 is not trusted as loopback", "testnet", "testnet", ["live.base_url_http=http://127.1:9"] + LOOP[1:3],
     False, "refused:mainnet refused"),
    ("an unknown proxy host is real money", "testnet", "testnet",
     ["live.base_url_http=https://bybit-proxy.example.net"] + LOOP[1:3], False, "refused:mainnet refused"),
    ("IPv6 loopback [::1] is loopback", "testnet", "testnet",
     ["live.base_url_http=http://[::1]:9", "live.base_url_ws_private=ws://[::1]:9/v5/private",
      "live.base_url_ws_trade=ws://[0:0:0:0:0:0:0:1]:9/v5/trade"] + TEST_EXCHANGE, False, "allowed:loopback"),
    ("loopback fake under --env testnet with adapter_environment=mainnet (the e2e setup)", "testnet", "testnet",
     LOOP + ["live.adapter_environment=mainnet"] + TEST_EXCHANGE, False, "allowed:loopback"),
    ("loopback not declared the test exchange (a local port may forward or redirect anywhere)", "testnet",
     "testnet", LOOP + ["live.adapter_environment=mainnet"], False, "refused:test_exchange = true"),
    ("only the REST endpoint an undeclared loopback, the sockets on testnet", "testnet", "testnet",
     ["live.base_url_http=http://127.0.0.1:9"], False, "refused:mix real-money and test venues"),
    ("test_exchange with a testnet host among the order endpoints", "testnet", "testnet",
     LOOP[:2] + TEST_EXCHANGE, False, "refused:is not a loopback address"),
    ("test_exchange with mainnet.toml (allow_mainnet) and every confirmation", "mainnet-allowed", "mainnet",
     LOOP + TEST_EXCHANGE, True, "refused:live.test_exchange = true is refused"),
    ("test_exchange with mainnet.toml as shipped under --env testnet", "mainnet", "testnet",
     LOOP + TEST_EXCHANGE, False, "refused:live.test_exchange = true is refused"),
    ("test_exchange with testnet.toml under --env mainnet", "testnet", "mainnet", LOOP + TEST_EXCHANGE, True,
     "refused:live.test_exchange = true is refused"),
    ("--env mainnet, every order URL an undeclared loopback (a local TLS forwarder): real money, confirmed",
     "mainnet-allowed", "mainnet", LOOP, True, "allowed:undeclared-loopback"),
    ("--env mainnet, every order URL loopback, file without allow_mainnet", "mainnet", "mainnet", LOOP, True,
     "refused:allow_mainnet = true in the config file"),
    ("--env demo with testnet endpoints", "testnet", "demo", ["live.adapter_environment=testnet"], False,
     "refused:--env demo but orders would go to testnet"),
    ("demo: the unused trade-WS default (a mainnet host) does not count", "testnet", "demo", [], False, "allowed:demo"),
    ("testnet as shipped", "testnet", "testnet", [], False, "allowed:testnet"),
    ("mainnet with all three confirmations over plaintext http/ws", "mainnet-allowed", "mainnet",
     ["live.base_url_http=http://api.bybit.com", "live.base_url_ws_private=ws://stream.bybit.com/v5/private",
      "live.base_url_ws_trade=ws://stream.bybit.com/v5/trade"], True, "refused:plaintext"),
    ("mainnet: only the trade socket plaintext", "mainnet-allowed", "mainnet",
     ["live.base_url_ws_trade=ws://stream.bybit.com/v5/trade"], True, "refused:plaintext"),
    ("testnet REST over plaintext http", "testnet", "testnet", ["live.base_url_http=http://api-testnet.bybit.com"],
     False, "refused:plaintext"),
    ("public market data over plaintext ws to a testnet host", "testnet", "testnet",
     ["live.base_url_ws_public=ws://stream-testnet.bybit.com/v5/public/linear"], False, "refused:plaintext"),
    ("mainnet with all three confirmations", "mainnet-allowed", "mainnet", [], True, "allowed:mainnet"),
    # [risk] from --set on real money (hostile finding 5): every risk key, whichever direction.
    ("mainnet: --set risk.enabled=false", "mainnet-allowed", "mainnet", ["risk.enabled=false"], True,
     "refused:--set risk.enabled=false: [risk] cannot come from --set on a real-money run"),
    ("mainnet: --set risk.kill_switch.file= (no kill switch)", "mainnet-allowed", "mainnet",
     ["risk.kill_switch.file="], True, "refused:[risk] cannot come from --set"),
    ("mainnet: --set tightening risk.loss.daily_loss_stop is refused too", "mainnet-allowed", "mainnet",
     ["risk.loss.daily_loss_stop=10"], True, "refused:[risk] cannot come from --set"),
    ("undeclared loopback (real money) with --set risk.engine.max_notional_per_order", "mainnet-allowed", "mainnet",
     LOOP + ["risk.engine.max_notional_per_order=0"], True, "refused:[risk] cannot come from --set"),
    ("testnet: --set risk.* allowed", "testnet", "testnet", ["risk.enabled=false", "risk.loss.daily_loss_stop=5"],
     False, "allowed:testnet"),
    ("declared test exchange: --set risk.* allowed", "testnet", "testnet",
     LOOP + TEST_EXCHANGE + ["risk.kill_switch.file=", "risk.audit.file=/tmp/a.jsonl"], False, "allowed:loopback"),
]


def outcome(tmp: Path, config: str, env: str, overrides: list[str], confirm: bool) -> str:
    path = {"testnet": TESTNET, "mainnet": MAINNET}.get(config) or _mainnet_allowed(tmp)
    try:
        _, live, file_cfg = LOAD(path, overrides, with_file=True)
        eps = check_environment(env, live, confirm, file_cfg=file_cfg)
    except (ConfigError, LiveRefused) as e:
        assert "\n" not in str(e)
        return f"refused:{e}"
    return f"allowed:{eps.order_class}"


def _matches(got: str, expected: str) -> bool:
    kind, _, text = expected.partition(":")
    return got.startswith(kind + ":") and (got == expected if kind == "allowed" else text in got)


@pytest.mark.parametrize("row", GATE_TABLE, ids=[r[0] for r in GATE_TABLE])
def test_live_gate_table(tmp_path, row):
    _, config, env, overrides, confirm, expected = row
    got = outcome(tmp_path, config, env, overrides, confirm)
    assert _matches(got, expected), (got, expected)


def test_live_gate_resolves_like_nautilus():
    """Defaults are Nautilus' own URL functions, per environment; overrides win; DEMO's trade socket
    is not used (BybitExecutionClient._connect skips it)."""
    from nautilus_trader.core import nautilus_pyo3 as p
    from nautilus_trader.core.nautilus_pyo3 import BybitEnvironment as BE, BybitProductType as BP

    from mmbot.live.node import LiveSection

    for env, be in (("testnet", BE.TESTNET), ("demo", BE.DEMO), ("mainnet", BE.MAINNET)):
        eps = E.resolve_endpoints(LiveSection(), env)
        assert eps.get("rest").url == p.get_bybit_http_base_url(be)
        assert eps.get("ws_private").url == p.get_bybit_ws_url_private(be)
        assert eps.get("ws_trade").url == p.get_bybit_ws_url_trade(be)
        assert eps.get("ws_public").url == p.get_bybit_ws_url_public(BP.LINEAR, be)
        assert eps.get("ws_trade").used == (env != "demo")
    eps = E.resolve_endpoints(LiveSection(base_url_ws_private="ws://127.0.0.1:1/p", adapter_environment="testnet"),
                              "mainnet")
    assert eps.get("ws_private").url == "ws://127.0.0.1:1/p" and eps.get("ws_private").source == "live.base_url_ws_private"
    assert eps.get("rest").url == "https://api-testnet.bybit.com" and eps.adapter_environment == "testnet"


@pytest.mark.parametrize("host,cls", [
    ("localhost", "loopback"), ("LOCALHOST", "loopback"), ("localhost.", "other"), ("LOCALHOST.", "other"), ("127.0.0.1", "loopback"), ("127.255.3.4", "loopback"),
    ("::1", "loopback"), ("0:0:0:0:0:0:0:1", "loopback"), ("api-testnet.bybit.com", "testnet"),
    ("stream-demo.bybit.com", "demo"), ("api.bybit.com", "mainnet"), ("api.bytick.com", "mainnet"),
    ("localhost.evil.com", "other"), ("127.1", "other"), ("0x7f.0.0.1", "other"), ("0.0.0.0", "other"),
    ("10.0.0.1", "other"), ("api-testnet.bybit.com.evil.com", "other"), ("api%2ebybit.com", "other"),
])
def test_live_gate_classify_host(host, cls):
    assert E.classify_host(host) == cls


# -- mutants: each deliberately broken gate must make some row of the table fail ---------------------

def _mutant_label_only(label, eps, **kw):  # the old check: the --env label alone
    if label == "mainnet" and not (kw["file_allow_mainnet"] and kw["confirm_mainnet"]):
        raise E.EndpointError("mainnet refused")


def _mutant_no_trade_ws(label, eps, **kw):  # forget the trade socket among order destinations
    items = tuple(e for e in eps.items if e.role != "ws_trade")
    return _real_gate(label, E.Endpoints(eps.adapter_environment, items), **kw)


def _mutant_rest_only(label, eps, **kw):  # only the REST URL decides
    items = tuple(e for e in eps.items if e.role not in ("ws_trade", "ws_private"))
    return _real_gate(label, E.Endpoints(eps.adapter_environment, items), **kw)


def _mutant_no_file_environment(label, eps, **kw):  # any file with allow_mainnet will do
    return _real_gate(label, eps, **{**kw, "file_environment": "mainnet"})


def _mutant_label_mismatch_ok(label, eps, **kw):  # a label that disagrees with the endpoints passes
    if eps.real_money:
        return _real_gate("mainnet", eps, **kw)


LOAD = load_live_config  # the mutant "allow_mainnet from --set trusted" replaces it


def _load_trusting_set(path, overrides=(), with_file=False):
    from mmbot.live.node import LiveConfigFile

    wanted = [o for o in overrides if o.startswith("live.allow_mainnet=")]
    cfg, live, f = load_live_config(path, [o for o in overrides if o not in wanted], with_file=True)
    if wanted and wanted[-1].endswith("true"):
        f = LiveConfigFile(environment=f.environment, allow_mainnet=True)
    return cfg, live, f


_real_gate = E.check_gate
_real_resolve = E.resolve_endpoints
_real_classify = E.classify_host
_real_check_url = E.check_url


def _classify_no_lower(host):
    return "other" if host != host.lower() else _real_classify(host)


def _classify_no_strip(host):
    return "other" if host.rstrip(".") != host.lower() else _real_classify(host)


def _classify_localhost_dot(host):  # the old rule: one trailing dot stripped before "localhost"
    return "loopback" if host.lower() == "localhost." else _real_classify(host)


def _classify_prefix_loopback(host):
    return "loopback" if host.lower().startswith(("localhost", "127.")) else _real_classify(host)


def _classify_unknown_is_testnet(host):
    c = _real_classify(host)
    return "testnet" if c == "other" else c


def _mutant_plaintext_ok(label, eps, **kw):  # the TLS rule forgotten
    orig = E._require_tls
    E._require_tls = lambda eps: None
    try:
        return _real_gate(label, eps, **kw)
    finally:
        E._require_tls = orig


def _mutant_tls_orders_only(label, eps, **kw):  # TLS checked for order endpoints only (not market data)
    orig = E.plaintext_remote
    E.plaintext_remote = lambda eps: [e for e in orig(eps) if e.role in E.ORDER_ROLES]
    try:
        return _real_gate(label, eps, **kw)
    finally:
        E.plaintext_remote = orig


def _resolve_trusting_loopback(live, env, record=None):  # the old rule: every loopback port is the test exchange
    import dataclasses

    eps = _real_resolve(live, env, record)
    items = tuple(dataclasses.replace(e, cls="loopback") if e.cls == E.UNDECLARED else e for e in eps.items)
    return E.Endpoints(eps.adapter_environment, items, eps.test_exchange)


def _mutant_test_exchange_on_mainnet(label, eps, **kw):  # test_exchange accepted whatever the config file says
    if eps.test_exchange:
        kw = {**kw, "file_environment": "testnet", "file_allow_mainnet": False}
    return _real_gate(label, eps, **kw)


def _resolve_test_exchange_anything(live, env, record=None):  # test_exchange makes every host a test venue
    import dataclasses

    eps = _real_resolve(live, env, record)
    if not eps.test_exchange:
        return eps
    items = tuple(dataclasses.replace(e, cls="loopback") for e in eps.items)
    return E.Endpoints(eps.adapter_environment, items, True)


def _check_url_allows_userinfo(key, url):
    if "@" not in url:
        _real_check_url(key, url)


def _load_dropping_risk_from_set(path, overrides=(), with_file=False):  # [risk] --set not recorded
    from mmbot.live.node import LiveConfigFile

    cfg, live, f = load_live_config(path, overrides, with_file=True)
    return cfg, live, LiveConfigFile(environment=f.environment, allow_mainnet=f.allow_mainnet)


def _load_risk_from_set_only_enabled(path, overrides=(), with_file=False):  # only "risk.enabled" counts
    from mmbot.live.node import LiveConfigFile

    cfg, live, f = load_live_config(path, overrides, with_file=True)
    only = tuple(o for o in f.risk_from_set if o.startswith("risk.enabled"))
    return cfg, live, LiveConfigFile(environment=f.environment, allow_mainnet=f.allow_mainnet, risk_from_set=only)


MUTANTS = {
    "[risk] from --set not recorded": ("LOAD", _load_dropping_risk_from_set),
    "only risk.enabled counts as weakening": ("LOAD", _load_risk_from_set_only_enabled),
    "allow_mainnet from --set trusted": ("LOAD", _load_trusting_set),
    "gate by label only": ("check_gate", _mutant_label_only),
    "trade WS not an order destination": ("check_gate", _mutant_no_trade_ws),
    "REST URL alone decides": ("check_gate", _mutant_rest_only),
    "file environment not required": ("check_gate", _mutant_no_file_environment),
    "label mismatch accepted": ("check_gate", _mutant_label_mismatch_ok),
    "plaintext accepted to remote hosts": ("check_gate", _mutant_plaintext_ok),
    "loopback trusted without test_exchange": ("resolve_endpoints", _resolve_trusting_loopback),
    "test_exchange accepted with a mainnet config": ("check_gate", _mutant_test_exchange_on_mainnet),
    "test_exchange trusts non-loopback hosts": ("resolve_endpoints", _resolve_test_exchange_anything),
    "TLS required for order endpoints only": ("check_gate", _mutant_tls_orders_only),
    "host compared case-sensitively": ("classify_host", _classify_no_lower),
    "trailing dot not stripped": ("classify_host", _classify_no_strip),
    "loopback by prefix": ("classify_host", _classify_prefix_loopback),
    "localhost. trusted as loopback": ("classify_host", _classify_localhost_dot),
    "unknown host treated as testnet": ("classify_host", _classify_unknown_is_testnet),
    "user info allowed": ("check_url", _check_url_allows_userinfo),
}


@pytest.mark.parametrize("name", list(MUTANTS))
def test_live_gate_mutants_are_caught(tmp_path, monkeypatch, name):
    attr, fn = MUTANTS[name]
    if attr == "LOAD":
        monkeypatch.setattr(sys.modules[__name__], "LOAD", fn)
    else:
        monkeypatch.setattr(E, attr, fn)
    if attr == "check_url":  # node.py imported it by name too
        import mmbot.live.node as N

        monkeypatch.setattr(N, "check_url", fn)
    failing = []
    for row in GATE_TABLE:
        _, config, env, overrides, confirm, expected = row
        try:
            got = outcome(tmp_path, config, env, overrides, confirm)
        except Exception as e:  # noqa: BLE001  (a mutant may also crash)
            got = f"crash:{e}"
        if not _matches(got, expected):
            failing.append(row[0])
    assert failing, f"mutant {name!r} passes the whole gate table"


# -- through the CLI: refused with exit 2 before any lock, banner or connection ------------------------

@pytest.mark.parametrize("args", [
    ["--env", "testnet", "--config", "config/testnet.toml", "--set", "live.adapter_environment=mainnet"],
    ["--env", "mainnet", "--config", "config/testnet.toml", "--set", "live.allow_mainnet=true", "--confirm-mainnet"],
])
def test_live_gate_cli_refuses_before_anything(tmp_path, args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    key = process_api_key("K" * 18)
    env.update(BYBIT_API_KEY=key, BYBIT_API_SECRET="S" * 24, BYBIT_TESTNET_API_KEY=key,
               BYBIT_TESTNET_API_SECRET="S" * 24)
    r = subprocess.run([sys.executable, "-m", "mmbot.cli", "live", *args, "--duration", "1s",
                        "--set", f"live.lock_dir={tmp_path}"], capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=60)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "mainnet refused" in lines[0], r.stderr
    assert "ENVIRONMENT" not in r.stderr and not list(tmp_path.iterdir())
