"""``QueueSimRouter``: ONE execution client for several instruments on the simulated venue
(docs/portfolio.md).

Nautilus routes every order of the venue to one execution client. The queue simulator's state is
per instrument (the exchange's L2 book, the queue levels, the exchange timeline of that
instrument's streams, lots and ticks), so the router holds one ``QueueSimExecutionClient`` per
instrument, each subscribed to its own instrument's data topics, and hands every command to the
simulator of ``command.instrument_id``: an order never meets another instrument's book or queue.
The simulators share the account (the first opens it), the cache, the clock and the message bus;
``SimParams.id_prefix`` keeps their venue order ids, trade ids and clock alerts apart.

A command for an instrument outside the portfolio is refused (an order: ``OrderRejected``;
a cancel or amend: counted in ``stats["unrouted_commands"]``): nothing is dropped silently.
"""

from __future__ import annotations

from nautilus_trader.execution.client import ExecutionClient
from nautilus_trader.model.enums import AccountType, OmsType

from adapters.sim.exec_client import QueueSimExecutionClient

UNKNOWN_INSTRUMENT_REJECT = "instrument not quoted by this node"


class QueueSimRouter(ExecutionClient):
    """``sims``: instrument id -> its simulator (built by the builder, started and stopped here)."""

    def __init__(self, sims: dict, msgbus, cache, clock, client_id) -> None:
        super().__init__(client_id, None, OmsType.NETTING, AccountType.MARGIN, None, msgbus, cache, clock)
        self.sims: dict = dict(sims)  # InstrumentId -> QueueSimExecutionClient
        self.unrouted_commands = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def _start(self) -> None:
        for sim in self.sims.values():
            sim.start()
        first = next(iter(self.sims.values()))
        self._set_account_id(first.account_id)
        self._set_connected(True)

    def _stop(self) -> None:
        for sim in self.sims.values():
            sim.stop()
        self._set_connected(False)

    def catch_up_for_stop(self) -> dict[str, int]:
        """Each simulator's ``catch_up_for_stop``: instrument id -> its local stop instant (each
        simulator's local time follows its own instrument's messages)."""
        return {str(iid): sim.catch_up_for_stop() for iid, sim in self.sims.items()}

    def received_through_ns(self) -> dict[str, int | None]:
        """Each simulator's ``received_through_ns``, per instrument id."""
        return {str(iid): sim.received_through_ns() for iid, sim in self.sims.items()}

    # -- commands: each to its instrument's simulator ------------------------------------------

    def _sim(self, instrument_id) -> QueueSimExecutionClient | None:
        sim = self.sims.get(instrument_id)
        if sim is None:
            self.unrouted_commands += 1
        return sim

    def submit_order(self, command) -> None:
        sim = self._sim(command.instrument_id)
        if sim is not None:
            sim.submit_order(command)
            return
        order = command.order
        ts = self._clock.timestamp_ns()
        self.generate_order_submitted(order.strategy_id, order.instrument_id, order.client_order_id, ts)
        self.generate_order_rejected(order.strategy_id, order.instrument_id, order.client_order_id,
                                     UNKNOWN_INSTRUMENT_REJECT, ts, False)

    def modify_order(self, command) -> None:
        sim = self._sim(command.instrument_id)
        if sim is not None:
            sim.modify_order(command)

    def cancel_order(self, command) -> None:
        sim = self._sim(command.instrument_id)
        if sim is not None:
            sim.cancel_order(command)

    def cancel_all_orders(self, command) -> None:
        sim = self._sim(command.instrument_id)
        if sim is not None:
            sim.cancel_all_orders(command)

    def batch_cancel_orders(self, command) -> None:
        for c in command.cancels:
            self.cancel_order(c)

    def query_order(self, command) -> None:
        sim = self._sim(command.instrument_id)
        if sim is not None:
            sim.query_order(command)

    # -- live feeds (shadow: mmbot.live.shadow) ------------------------------------------------

    def message_handled(self) -> None:
        """A market-data message has been handled by every subscriber: every simulator is told
        (only the one whose instrument the message was is inside it; the others do nothing)."""
        for sim in self.sims.values():
            sim.message_handled()

    @property
    def run_on_loop(self):
        return next(iter(self.sims.values())).run_on_loop

    @run_on_loop.setter
    def run_on_loop(self, post) -> None:
        for sim in self.sims.values():
            sim.run_on_loop = post

    # -- results ------------------------------------------------------------------------------

    @property
    def stats(self) -> dict:
        """Every simulator counter summed over the instruments (``fill_causes`` per cause)."""
        out: dict = {}
        for sim in self.sims.values():
            for k, v in sim.stats.items():
                if isinstance(v, dict):
                    d = out.setdefault(k, {})
                    for c, n in v.items():
                        d[c] = d.get(c, 0) + n
                else:
                    out[k] = out.get(k, 0) + v
        return out
