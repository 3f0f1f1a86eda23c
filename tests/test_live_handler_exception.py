"""An exception in a market-data handler stops the run the normal way (hostile review of issue 13,
finding 7): the strategy's cancel, the venue check over REST, exit 1 with one ``error:`` line, or
exit 3 when the check finds orders left.

Nautilus' data (and risk) engine ends the process with ``os._exit(1)`` on such an exception unless
``graceful_shutdown_on_exception`` is on: no cancel, no venue check, our orders left resting. The
exception is injected here by a ``sitecustomize`` on the subprocess' PYTHONPATH (no test hook in
mmbot): the strategy's book handler raises once our quotes rest on the fake exchange.
"""

from __future__ import annotations

import os

from tests.test_live_e2e import Live, recording  # noqa: F401  (fixture)
from tests.test_live_e2e import fake  # noqa: F401  (fixture)

HOOK = '''
import time
from strategies.market_maker import MarketMaker

_orig = MarketMaker.on_order_book_deltas
_t0 = []

def _raising(self, deltas):
    if len(self.cache.orders_open(instrument_id=self._iid)) >= 2:
        _t0.append(time.monotonic())
        if _t0[-1] - _t0[0] > 2.0:
            raise RuntimeError("injected handler failure (test)")
    return _orig(self, deltas)

MarketMaker.on_order_book_deltas = _raising
'''


def test_exception_in_the_strategy_book_handler_goes_through_the_venue_checked_stop(tmp_path, fake, monkeypatch):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    live = Live(tmp_path, fake, extra=["--set", "live.timeout_post_stop_s=1"])
    try:
        code = live.proc.wait(120)
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    err = live.err.read_text(errors="replace")
    left = [o["orderLinkId"] for o in fake.state()["open_orders"]]
    assert "injected handler failure" in err, err[-2000:]
    assert "System will terminate immediately" not in err
    assert '"event": "stop_check"' in err, err[-2000:]
    assert left == [], f"orders resting after the stop: {left}"
    assert code == 1, (code, err[-2000:])
    errors = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and "injected handler failure" in errors[0], errors
