"""Shadow's readiness (hostile review of issue 13, finding 17): a public stream that connects but
never sends a book is not a session either. Here a loopback WebSocket accepts the subscription
and stays silent: exit 4 within ``timeout_connection_s`` with one line naming the missing book
(was: ran to ``--duration``, exit 0, no fills)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

from aiohttp import web

from tests.loopback_http import serve
from tests.test_hostile_issue13 import REPO, _env


def _silent_ws_server() -> tuple[str, callable]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict = {}

    async def ws(request):
        w = web.WebSocketResponse()
        await w.prepare(request)
        async for _ in w:  # accept the subscription, answer nothing
            pass
        return w

    async def start():
        box["runner"], box["port"] = await serve(ws, "/pub")
        ready.set()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait(10)

    def stop():
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)

    return f"ws://127.0.0.1:{box['port']}/pub", stop


def test_shadow_with_a_silent_public_stream_exits_4_naming_the_book(tmp_path):
    url, stop = _silent_ws_server()
    try:
        args = ["live", "--env", "shadow", "--config", str(REPO / "config/testnet.toml"), "--duration", "20s",
                "--set", "live.timeout_connection_s=2",
                "--set", f"live.lock_dir={tmp_path / 'locks'}", "--set", f"live.out_dir={tmp_path / 'runs'}",
                "--set", f"risk.audit.file={tmp_path / 'audit.jsonl'}",
                "--set", f"risk.kill_switch.file={tmp_path / 'KILL'}", "--set", "live.metrics_port=-1",
                "--set", f"live.base_url_ws_public={url}", "--set", "live.base_url_http=http://127.0.0.1:9"]
        r = subprocess.run([sys.executable, "-m", "mmbot.cli", *args], capture_output=True, text=True, env=_env(),
                           cwd=REPO, timeout=120)
    finally:
        stop()
    assert r.returncode == 4, (r.returncode, r.stderr[-1500:])
    errors = [x for x in r.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and "no two-sided order book" in errors[0], errors
