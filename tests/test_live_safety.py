"""mmbot live: mainnet refusal, keys (env / 0600 file), masking, lock, banner, builder (no network)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmbot.config.backtest import ConfigError
from mmbot.live.node import LiveRefused, LiveSection, check_environment, is_own_order_id, load_live_config, parse_duration
from mmbot.live.lock import LiveLock, LockHeld, lock_path
from mmbot.live.secrets import Credentials, SecretsError, load_credentials, mask, mask_text
from tools.fake_bybit.auth import process_api_key

REPO = Path(__file__).resolve().parent.parent
MMBOT = [sys.executable, "-m", "mmbot.cli"]
SECRET = "s3cr3t-VALUE-0123456789abcdef"
KEY = process_api_key("KEYabcdefghijklmnop")  # this process' own: one instance per key per host


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    env.update(extra)
    return env


def _run(args, env, timeout=60):
    return subprocess.run(MMBOT + args, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


# -- mainnet ------------------------------------------------------------------------------------

def test_live_mainnet_needs_file_flag_and_confirmation_unit():
    from mmbot.live.node import LiveConfigFile

    mainnet_file = LiveConfigFile(environment="mainnet", allow_mainnet=True)
    with pytest.raises(LiveRefused, match="allow_mainnet.*--confirm-mainnet"):
        check_environment("mainnet", LiveSection(), confirm_mainnet=False)
    with pytest.raises(LiveRefused, match="--confirm-mainnet"):
        check_environment("mainnet", LiveSection(), confirm_mainnet=False, file_cfg=mainnet_file)
    with pytest.raises(LiveRefused, match="allow_mainnet"):
        check_environment("mainnet", LiveSection(), confirm_mainnet=True,
                          file_cfg=LiveConfigFile(environment="mainnet", allow_mainnet=False))
    with pytest.raises(LiveRefused, match='environment = "mainnet"'):
        check_environment("mainnet", LiveSection(), confirm_mainnet=True,
                          file_cfg=LiveConfigFile(environment="testnet", allow_mainnet=True))
    eps = check_environment("mainnet", LiveSection(), confirm_mainnet=True, file_cfg=mainnet_file)
    assert eps.real_money and eps.get("rest").url == "https://api.bybit.com"
    assert not check_environment("testnet", LiveSection(), confirm_mainnet=False).real_money


@pytest.mark.parametrize("extra", [[], ["--confirm-mainnet"], ["--set", "live.allow_mainnet=true"]])
def test_live_mainnet_refused_exit_2_before_connection(tmp_path, extra):
    # Keys are present and the URLs point at a closed loopback port: any connection attempt
    # would show up as a different error; the refusal must come first, with exit 2.
    env = _clean_env(BYBIT_API_KEY=KEY, BYBIT_API_SECRET=SECRET)
    r = _run(["live", "--env", "mainnet", "--config", "config/mainnet.toml", "--duration", "1s",
              "--set", "live.base_url_http=http://127.0.0.1:9", "--set", f"live.lock_dir={tmp_path}", *extra], env)
    assert r.returncode == 2, r.stderr
    assert "mainnet refused" in r.stderr
    assert "ENVIRONMENT" not in r.stderr  # no banner: nothing was built
    assert SECRET not in r.stdout + r.stderr
    assert not list(tmp_path.iterdir())  # not even the lock was taken


def test_live_testnet_without_keys_exit_2():
    r = _run(["live", "--env", "testnet", "--config", "config/testnet.toml", "--duration", "1s"], _clean_env())
    assert r.returncode == 2
    assert "BYBIT_TESTNET_API_KEY" in r.stderr


# -- keys ---------------------------------------------------------------------------------------

def test_live_keys_from_env_per_environment():
    environ = {"BYBIT_API_KEY": "mk" * 8, "BYBIT_API_SECRET": "ms" * 8, "BYBIT_TESTNET_API_KEY": "tk" * 8,
               "BYBIT_TESTNET_API_SECRET": "ts" * 8, "BYBIT_DEMO_API_KEY": "dk" * 8, "BYBIT_DEMO_API_SECRET": "ds" * 8}
    assert load_credentials("mainnet", environ=environ).api_key == "mk" * 8
    assert load_credentials("testnet", environ=environ).api_secret == "ts" * 8
    assert load_credentials("demo", environ=environ).api_key == "dk" * 8
    with pytest.raises(SecretsError, match="BYBIT_TESTNET_API_SECRET"):
        load_credentials("testnet", environ={"BYBIT_TESTNET_API_KEY": "x" * 16})


def test_live_key_file_0600_accepted_and_group_readable_refused(tmp_path):
    f = tmp_path / "keys.toml"
    f.write_text(f'api_key = "{KEY}"\napi_secret = "{SECRET}"\n')
    os.chmod(f, 0o600)
    c = load_credentials("testnet", f, environ={})
    assert (c.api_key, c.api_secret) == (KEY, SECRET)
    os.chmod(f, 0o400)
    load_credentials("testnet", f, environ={})
    for mode in (0o640, 0o604, 0o644, 0o660):
        os.chmod(f, mode)
        with pytest.raises(SecretsError, match="group or others") as e:
            load_credentials("testnet", f, environ={})
        assert SECRET not in str(e.value)


def test_live_key_file_bad_toml_does_not_echo_secret(tmp_path):
    f = tmp_path / "keys.toml"
    f.write_text(f'api_key = "{KEY}"\napi_secret = {SECRET}\n')
    os.chmod(f, 0o600)
    with pytest.raises(SecretsError) as e:
        load_credentials("testnet", f, environ={})
    assert SECRET not in str(e.value)


def test_live_key_file_refused_by_cli_exit_2(tmp_path):
    f = tmp_path / "keys.toml"
    f.write_text(f'api_key = "{KEY}"\napi_secret = "{SECRET}"\n')
    os.chmod(f, 0o644)
    r = _run(["live", "--config", "config/testnet.toml", "--key-file", str(f), "--duration", "1s"], _clean_env())
    assert r.returncode == 2
    assert "group or others" in r.stderr and SECRET not in r.stderr + r.stdout


def test_live_masking():
    assert mask("abcdefghijklmnopwxyz") == "abcd…wxyz"
    assert SECRET not in mask(SECRET) and KEY not in mask(KEY)
    c = Credentials(KEY, SECRET, "env:X")
    assert SECRET not in repr(c) and KEY not in str(c) and f"KEYa…{KEY[-4:]}" in repr(c)
    assert mask_text(f"key={KEY} secret={SECRET}", c.secrets()) == f"key={mask(KEY)} secret={mask(SECRET)}"


def test_live_process_output_masker_catches_native_writes():
    code = f"""
import os, sys
from mmbot.live.secrets import mask_process_output
m = mask_process_output([{SECRET!r}])
print("py stdout {SECRET}")
print("py stderr {SECRET}", file=sys.stderr)
sys.stdout.flush()
os.write(1, b"raw fd write {SECRET} end\\n")
os.write(2, b"partial {SECRET}")
m.stop()
print("after stop")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert SECRET not in out
    assert out.count(mask(SECRET)) == 4
    assert "after stop" in r.stdout


# -- lock ---------------------------------------------------------------------------------------

def test_live_lock_refuses_second_instance(tmp_path):
    p = lock_path(tmp_path, "testnet", "acct/1", "BTCUSDT-LINEAR.BYBIT")
    assert p.name == "mmbot-testnet-acct_1-BTCUSDT-LINEAR.BYBIT.lock"
    first = LiveLock(p).acquire()
    # A second process (flock is per open file description; a child is the honest test).
    code = f"from mmbot.live.lock import LiveLock; LiveLock({str(p)!r}).acquire()"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.returncode != 0 and "LockHeld" in r.stderr and f"pid {os.getpid()}" in r.stderr
    with pytest.raises(LockHeld):
        LiveLock(p).acquire()  # also within the process (a separate open file)
    first.release()
    LiveLock(p).acquire().release()  # free again
    other = LiveLock(lock_path(tmp_path, "testnet", "acct/1", "ETHUSDT-LINEAR.BYBIT")).acquire()  # other instrument
    other.release()


def test_live_lock_unusable_is_one_error_not_a_traceback(tmp_path):
    """lock_dir under a regular file, or the lock path a directory: ``LockUnusable`` (an OSError)
    naming the path; the CLIs turn it into one line naming live.lock_dir (hostile finding 12)."""
    from mmbot.live.lock import LockUnusable

    (tmp_path / "afile").write_text("")
    with pytest.raises(LockUnusable, match="cannot use the lock file .*afile.*: Not a directory"):
        LiveLock(tmp_path / "afile" / "locks" / "x.lock").acquire()
    (tmp_path / "d.lock").mkdir()
    with pytest.raises(LockUnusable, match="d.lock: Is a directory"):
        LiveLock(tmp_path / "d.lock").acquire()
    # Never through a symlink, a FIFO or a hard link (hostile finding 11): refused, the target intact.
    victim = tmp_path / "notes.txt"
    victim.write_text("notes\n")
    (tmp_path / "link.lock").symlink_to(victim)
    with pytest.raises(LockUnusable, match="link.lock: a symbolic link"):
        LiveLock(tmp_path / "link.lock").acquire()
    os.link(victim, tmp_path / "hard.lock")
    with pytest.raises(LockUnusable, match="hard.lock: a hard link to another file"):
        LiveLock(tmp_path / "hard.lock").acquire()
    os.mkfifo(tmp_path / "fifo.lock")
    with pytest.raises(LockUnusable, match="fifo.lock: not a regular file"):
        LiveLock(tmp_path / "fifo.lock").acquire()
    assert victim.read_text() == "notes\n"
    # Shadow mode (no key) refuses the same way: exit 2, one line, the key named.
    r = _run(["live", "--env", "shadow", "--config", "config/testnet.toml", "--duration", "1s",
              "--set", f"live.lock_dir={tmp_path / 'afile' / 'locks'}", "--set", "live.metrics_port=-1"], _clean_env())
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert [x for x in r.stderr.splitlines() if x.startswith("error:")] == [
        f"error: live.lock_dir = {str(tmp_path / 'afile' / 'locks')!r}: cannot use the lock file "
        f"{tmp_path / 'afile' / 'locks' / 'mmbot-shadow-default-BTCUSDT-LINEAR.BYBIT.lock'}: Not a directory"], r.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract unix sockets are Linux-only")
def test_live_lock_survives_deletion_of_its_file(tmp_path):
    """Hostile finding 10: the holder's lock file deleted (or its whole lock_dir) while it runs; a
    second process must still be refused. A symlinked spelling of the same dir is the same lock; a
    key lock in ANOTHER lock_dir is the same lock too (its socket is named by the key digest:
    hostile review 26 F7), while any other lock in another lock_dir is another lock."""
    import shutil

    from mmbot.live.lock import key_lock_path

    p = key_lock_path(tmp_path / "locks", KEY)
    code = (f"import sys; from mmbot.live.lock import LiveLock; lock = LiveLock({str(p)!r}, info='x').acquire(); "
            "print('held', flush=True); sys.stdin.readline()")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=REPO)
    try:
        assert child.stdout.readline().strip() == "held"
        p.unlink()
        with pytest.raises(LockHeld, match="deleted or replaced"):
            LiveLock(p).acquire()
        shutil.rmtree(tmp_path / "locks")
        with pytest.raises(LockHeld):
            LiveLock(p).acquire()
        (tmp_path / "alias").symlink_to(tmp_path / "locks", target_is_directory=True)
        with pytest.raises(LockHeld):
            LiveLock(tmp_path / "alias" / p.name).acquire()
        with pytest.raises(LockHeld):  # the same API key from another lock_dir (review 26 F7)
            LiveLock(tmp_path / "elsewhere" / p.name).acquire()
        LiveLock(tmp_path / "elsewhere" / "mmbot-shadow-x.lock").acquire().release()  # not a key lock: another
    finally:
        child.stdin.close()
        child.wait(30)
    held = LiveLock(p).acquire()  # the holder gone: free (the kernel dropped its socket)
    held.release()
    LiveLock(p).acquire().release()  # and release() frees it within a process


def test_live_cli_never_sends_loopback_requests_through_a_proxy(tmp_path):
    """Hostile finding 2: with HTTP_PROXY/ALL_PROXY set, Nautilus' REST client sent the requests
    for the loopback exchange (signed ones with the key header) to the proxy. ``mmbot live`` puts
    loopback into NO_PROXY/no_proxy before any client exists: the proxy sees nothing."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def _any(self):
            seen.append(f"{self.command} {self.path[:80]}")
            self.send_response(502)
            self.end_headers()

        do_GET = do_POST = do_CONNECT = _any

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    proxy = f"http://127.0.0.1:{srv.server_address[1]}"
    env = _clean_env(BYBIT_TESTNET_API_KEY=KEY, BYBIT_TESTNET_API_SECRET=SECRET, MMBOT_KILL_TOKEN="",
                     HTTP_PROXY=proxy, http_proxy=proxy, ALL_PROXY=proxy, NO_PROXY="", no_proxy="")
    try:
        r = _run(["live", "--config", "config/testnet.toml", "--duration", "3s",
                  "--set", "live.base_url_http=http://127.0.0.1:9", "--set", "live.base_url_ws_private=ws://127.0.0.1:9/p",
                  "--set", "live.base_url_ws_trade=ws://127.0.0.1:9/t", "--set", "live.base_url_ws_public=ws://127.0.0.1:9/pub",
                  "--set", "live.adapter_environment=mainnet", "--set", "live.test_exchange=true",
                  "--set", "live.timeout_connection_s=2", "--set", "live.metrics_port=-1",
                  "--set", f"live.lock_dir={tmp_path / 'locks'}", "--set", f"live.out_dir={tmp_path / 'runs'}",
                  "--set", f"risk.audit.file={tmp_path / 'audit.jsonl'}", "--set", f"risk.kill_switch.file={tmp_path / 'K'}"],
                 env, timeout=120)
    finally:
        srv.shutdown()
    assert '"event": "proxy_env"' in r.stderr, r.stderr[-2000:]
    assert proxy not in r.stdout + r.stderr  # the names of the variables are logged, never their values
    assert seen == [], f"the proxy got {len(seen)} request(s) meant for the loopback exchange: {seen[:3]}"


def test_live_cli_lock_refusal_exit_2(tmp_path):
    from mmbot.live.lock import key_lock_path

    p = key_lock_path(tmp_path, KEY)  # the key alone, whatever the label or the endpoints
    held = LiveLock(p).acquire()
    try:
        env = _clean_env(BYBIT_TESTNET_API_KEY=KEY, BYBIT_TESTNET_API_SECRET=SECRET)
        r = _run(["live", "--config", "config/testnet.toml", "--duration", "1s",
                  "--set", f"live.lock_dir={tmp_path}", "--set", "live.account=some-other-label"], env)
    finally:
        held.release()
    assert r.returncode == 2, r.stderr
    assert "another mmbot live instance" in r.stderr
    assert SECRET not in r.stdout + r.stderr and KEY not in r.stdout + r.stderr


# -- config and builder ---------------------------------------------------------------------------

def test_live_config_validation():
    cfg, live = load_live_config(REPO / "config" / "testnet.toml", ["live.base_url_http=http://127.0.0.1:1"])
    assert live.environment == "testnet" and live.base_url_http == "http://127.0.0.1:1"
    for bad, msg in (("live.base_url_ws_public=http://x", "live.base_url_ws_public"),
                     ("live.foreign_orders=cancel", "live.foreign_orders"),
                     ("live.nope=1", "live.nope: unknown key"),
                     ("live.environment=prod", "live.environment")):
        with pytest.raises(ConfigError, match=msg):
            load_live_config(REPO / "config" / "testnet.toml", [bad])
    assert parse_duration("90s") == 90 and parse_duration("15m") == 900 and parse_duration(None) is None
    with pytest.raises(ConfigError):
        parse_duration("soon")


def test_live_kill_token_minimum_length():
    """A /kill token shorter than 16 characters is refused with one line that names the variable
    and never shows the token (hostile finding 15: MMBOT_KILL_TOKEN=0 masked every 0 everywhere).
    Boundary: 15 refused, 16 accepted (mutants: no minimum, ``<=``)."""
    from mmbot.live.node import KILL_TOKEN_MIN_CHARS, kill_token_from_env

    live = LiveSection()
    assert KILL_TOKEN_MIN_CHARS == 16
    assert kill_token_from_env(live, {}) == "" and kill_token_from_env(live, {"MMBOT_KILL_TOKEN": ""}) == ""
    assert kill_token_from_env(live, {"MMBOT_KILL_TOKEN": "k" * 16}) == "k" * 16
    for short in ("0", "q" * 15):
        with pytest.raises(ConfigError, match="MMBOT_KILL_TOKEN .live.kill_token_env.*at least 16") as e:
            kill_token_from_env(live, {"MMBOT_KILL_TOKEN": short})
        assert short not in str(e.value) and "\n" not in str(e.value)
    assert kill_token_from_env(LiveSection(kill_token_env=""), {"MMBOT_KILL_TOKEN": "0"}) == ""  # endpoint off


def test_live_own_order_ids():
    assert is_own_order_id("O-20240101-000000-001-000-1", "001")
    assert not is_own_order_id("O-20240101-000000-002-000-1", "001")
    assert not is_own_order_id("1234567890", "001")


def test_live_builder_shares_strategy_and_risk_actors_with_backtest(tmp_path):
    from nautilus_trader.core.nautilus_pyo3 import BybitEnvironment, BybitProductType

    from mmbot.backtest.run import resolve_window
    from mmbot.builders import build_backtest_run_config
    from mmbot.config.backtest import load_backtest_config
    from mmbot.live.node import build_live_node_config

    cfg, live = load_live_config(REPO / "config" / "testnet.toml", [
        "live.base_url_http=http://127.0.0.1:1", "live.base_url_ws_public=ws://127.0.0.1:1/v5/public/linear",
        "live.base_url_ws_private=ws://127.0.0.1:1/v5/private", "live.base_url_ws_trade=ws://127.0.0.1:1/v5/trade",
        "live.adapter_environment=mainnet"])
    creds = Credentials(KEY, SECRET, "test")
    nc = build_live_node_config(cfg, live, "testnet", creds, run_dir=tmp_path, metrics_port=0)
    d, e = nc.data_clients["BYBIT"], nc.exec_clients["BYBIT"]
    assert d.base_url_http == "http://127.0.0.1:1" and d.base_url_ws_public.startswith("ws://")
    assert e.base_url_ws_private.endswith("/v5/private") and e.base_url_ws_trade.endswith("/v5/trade")
    assert d.product_types == (BybitProductType.LINEAR,) == e.product_types
    assert d.environment == BybitEnvironment.MAINNET  # adapter_environment
    # One Bybit message = one batch ending in F_LAST (Nautilus' parser; adapters/bybit_live_book.py
    # turns a split one into a gap): the data engine hands batches on without re-buffering them.
    assert not nc.data_engine.buffer_deltas and nc.exec_engine.reconciliation
    # The same strategy config and risk actors as a backtest of the same config.
    bt_cfg = load_backtest_config(REPO / "config" / "testnet.toml", [])
    window = resolve_window(REPO / "catalog", "BTCUSDT-LINEAR.BYBIT", "", "")
    bt = build_backtest_run_config(bt_cfg, str(REPO / "catalog"), "BTCUSDT-LINEAR.BYBIT", window)
    # Identical but for the execution client the builder routes to (the backtest's queue
    # simulator, client QSIMBT in a backtest (QSIM in shadow); live: the venue's Bybit client).
    from adapters.sim.exec_client import BACKTEST_CLIENT_ID
    bt_strategy = bt.engine.strategies[0]
    assert bt_strategy.config.get("exec_client_id") == BACKTEST_CLIENT_ID == "QSIMBT"  # default fill_model = prob_power
    assert nc.strategies[0].strategy_path == bt_strategy.strategy_path
    # ... and for Nautilus' per-order INFO lines, which live does not write (QUIET_ORDER_LOGS; a
    # backtest bypasses logging altogether).
    from mmbot.live.node import QUIET_ORDER_LOGS

    assert QUIET_ORDER_LOGS == {"log_events": False, "log_commands": False}
    assert {k: nc.strategies[0].config.get(k) for k in QUIET_ORDER_LOGS} == QUIET_ORDER_LOGS
    assert {k: v for k, v in nc.strategies[0].config.items() if k not in QUIET_ORDER_LOGS} == \
           {k: v for k, v in bt_strategy.config.items() if k != "exec_client_id"}
    bt_risk = [a for a in bt.engine.actors if a.actor_path.startswith("strategies.risk")]
    live_risk = [a for a in nc.actors if a.actor_path.startswith("strategies.risk")]
    assert [a.actor_path for a in live_risk] == [a.actor_path for a in bt_risk]
    # ... but for the audit path and the kill switch's file, which is per mode and account
    # (risk.kill_switch.file = "../runs/KILL.{env}.{account}"): a backtest's kill never halts testnet.
    assert [{k: v for k, v in a.config.items() if k not in ("audit_path", "file")} for a in live_risk] == \
           [{k: v for k, v in a.config.items() if k not in ("audit_path", "file")} for a in bt_risk]
    kill_files = [(a.config["file"], b.config["file"]) for a, b in zip(live_risk, bt_risk) if "file" in a.config]
    assert [(Path(x).name, Path(y).name) for x, y in kill_files] == [("KILL.testnet.default", "KILL.backtest.default")]
    assert nc.risk_engine.max_notional_per_order == bt.engine.risk_engine.max_notional_per_order
    paths = [a.actor_path for a in nc.actors]
    assert "mmbot.live.metrics_server:MetricsActor" in paths and "mmbot.live.node:StartupOrderPolicy" in paths


def test_live_banner_states_environment_account_limits_guards(tmp_path):
    from mmbot.live.node import banner

    cfg, live = load_live_config(REPO / "config" / "testnet.toml", [])
    info = banner(cfg, live, "testnet", Credentials(KEY, SECRET, "env:BYBIT_TESTNET_API_KEY"), tmp_path / "x.lock", 9464, 60)
    text = repr(info)
    assert info["environment"] == "testnet" and info["account"] == "default"
    assert info["instrument"] == "BTCUSDT-LINEAR.BYBIT"
    assert info["limits"]["max_position"] == 0.01
    assert info["guards"]["circuit_breaker"]["max_rate_limits"] == 0 and "stale_data" in info["guards"]
    assert SECRET not in text and KEY not in text and mask(KEY) in text


def test_live_freeze_startup_heap_freezes_and_skips_under_tracemalloc():
    """docs/benchmarks.md "Live on loopback": at ready the startup heap leaves the cyclic
    collector's reach (no ~100-ms full collection while quoting); not while memtrace traces (its
    gc.get_objects() counts would lose the frozen objects). LiveRun.run unfreezes at the end."""
    import gc
    import tracemalloc

    from mmbot.live.node import freeze_startup_heap

    before = gc.get_freeze_count()  # whatever the test process froze already
    tracemalloc.start()
    try:
        assert freeze_startup_heap() is False and gc.get_freeze_count() == before
    finally:
        tracemalloc.stop()
    try:
        assert freeze_startup_heap() is True and gc.get_freeze_count() > before + 10_000
    finally:
        gc.unfreeze()
