"""Mutants of the fast replay path and of the checks added with it (the book invariant, the
feed gates, the notional pre-trade check): each breaks one on purpose and its tests (the
identity matrix tests/test_feed_identity.py, or tests/test_pretrade.py) must fail.
``python -m tools.feed_mutants [NAME ...]``.

Every mutant is applied to a copy of the checkout (never to the checkout itself), then the
matrix runs there; the table it prints is in docs/benchmarks.md ("Mutants of the fast path").
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

IDENTITY = "tests/test_feed_identity.py"
PRETRADE = "tests/test_pretrade.py"
# The per-message shortcuts (strategy planner, simulator): the end-to-end identity (shortcuts on
# vs off) first, then the planner's property test (actions and records after every call).
SHORTCUTS = "tests/test_strategy_shortcuts.py tests/test_planner.py"
VENUE_BOOK = "tests/test_venue_book.py"
ALERTS = "tests/test_sim_alert_memory.py tests/test_feed_identity.py"
SPILL = "tests/test_hostile_review30.py"  # the backtest's own temporary folder (spill rows, audit log)
FEED_MEMORY = "tests/test_feed_memory.py"
TIES = "tests/test_tie_order.py"  # the rule against Nautilus' merge, and the message feed's order
SNAPSHOT_TIES = "tests/test_hostile_review33.py tests/test_hostile_review32.py"
SPLIT = "tests/test_tie_order.py tests/test_feed_identity.py::test_a_tie_split_by_a_per_delta_chunk_edge_replays_per_delta"
TIES_E2E = "tests/test_tie_order.py tests/test_feed_identity.py::test_random_streams_with_ties"
HEAP = "tests/test_heap.py"
SORT_FILLS = "tests/test_sort_fills_fast.py"
LEDGER = "tests/test_ledger_spill.py"
REVIEW36 = "tests/test_feed_memory.py tests/test_hostile_review36.py"
SNAPSHOT_START = "tests/test_window_warmup.py tests/test_warmup_snapshot_config.py tests/test_hostile_review32.py"
MEMO = "tests/test_catalog_memo.py"  # a wf worker's setup reads kept per catalog state
LIVE_BOOK = ("tests/test_live_book_gaps.py::test_live_book_ids_clean_stream_has_importer_shape_and_no_gap "
             "tests/test_live_book_gaps.py::test_live_book_ids_update_keeps_every_row_and_carries_u_where_it_is_read")
# name -> (file, original text, mutated text, what it breaks[, test file]); test file: the matrix
# unless given
MUTANTS = {
    "message_cut_before_last_row": (
        "mmbot/backtest/feed.py",
        "ends = (np.flatnonzero(flags & F_LAST) + 1).tolist()",
        "ends = np.flatnonzero(flags & F_LAST).tolist()",
        "a message's F_LAST row is published with the next message",
    ),
    "message_before_trade_at_tie": (
        "mmbot/backtest/feed.py",
        "    t_kind = np.zeros(len(t_ts), np.int8)\n",
        "    t_kind = np.full(len(t_ts), 2, np.int8)\n",
        "at equal receive times the message goes before the trade",
    ),
    "tail_partial_published": (
        "mmbot/backtest/feed.py",
        "        st.dropped_tail_rows = len(carry)",
        "        st.dropped_tail_rows = len(carry)\n        if carry:\n            yield [OrderBookDeltas(iid, carry)], "
        "np.array([carry[-1].ts_init], dtype=np.int64)",
        "the rows after the window's last F_LAST published as a message",
    ),
    "carry_dropped": (
        "mmbot/backtest/feed.py",
        "                carry = rows[a:]",
        "                carry = []",
        "rows of a message cut by a decoded chunk's end are lost",
    ),
    "no_start_snap": (
        "mmbot/backtest/run.py",
        "        start_ns = snap_start(catalog_dir, instrument_id, start_ns)",
        "        pass",
        "a window starting inside a message replays half of it",
    ),
    "always_sizes_from_book": (
        "mmbot/builders.py",
        "sizes_from_book=book_invariant_declared(cfg.path(cfg.run.catalog), instrument_id),",
        "sizes_from_book=True,",
        "the simulator reads touched levels from the book on catalogs that do not declare the invariant",
    ),
    "feed_starts_at_window": (
        "mmbot/backtest/run.py",
        "    start, end = (None, None) if window.full else (window.replay_start_ns, window.end_ns)",
        "    start, end = (None, None) if window.full else (window.start_ns, window.end_ns)",
        "the per-message feed of a window between snapshots skips the warm-up from the last snapshot",
    ),
    "feed_clock_starts_at_window": (
        "mmbot/backtest/run.py",
        "        return window.replay_start_ns, window.end_ns",
        "        return window.start_ns, window.end_ns",
        "the per-message engine's clock starts at the window, after the warm-up rows it replays",
    ),
    "invariant_ignores_resent_size": (
        "mmbot/catalog_store.py",
        "                    if new == prev:\n                        self.unchanged_size += 1",
        "                    if False:\n                        self.unchanged_size += 1",
        "the importer's check misses rows that re-send a level's size",
    ),
    "trades_late_by_a_chunk": (
        "mmbot/backtest/feed.py",
        "k = int(np.searchsorted(t_ts, horizon, side=\"right\"))  # trades at or before the last message",
        "k = int(np.searchsorted(t_ts, int(m_ts[0]), side=\"right\"))  # trades at or before the last message",
        "trades between a chunk's first and last message held back to the next chunk",
    ),
    "invariant_ignores_repeated_level": (
        "mmbot/catalog_store.py",
        "                    if key in seen:\n                        self.repeated_level += 1",
        "                    if False:\n                        self.repeated_level += 1",
        "the importer's check misses a level changed twice in one message",
    ),
    "invariant_ignores_clear_inside": (
        "mmbot/catalog_store.py",
        "                if seen:\n                    self.clear_inside_message += 1",
        "                if False:\n                    self.clear_inside_message += 1",
        "the importer's check misses a CLEAR inside a message",
    ),
    "walk_ignores_clear_inside": (
        "adapters/sim/exec_client.py",
        "            if d.action == _ACTION_CLEAR:\n                return True",
        "            if d.action == _ACTION_CLEAR:\n                continue",
        "the simulator's row walk does not treat a CLEAR inside a message as touching every level",
    ),
    "auto_ignores_ties": (
        "mmbot/backtest/run.py",
        "    if want == \"auto\" and order.unresolved > 0:",
        "    if want == \"auto\" and order.unresolved > 1:",
        "run.feed = auto replays per message although a trade ties with a book row where the per-delta order is not derived",
        f"{IDENTITY} {TIES}",
    ),
    # Session 33: the per-delta order at trade / book-row ties (``tie_order``), replayed per message.
    "tie_order_never_alternates": (
        "mmbot/backtest/feed.py", "first_book = not last_tie_book_first", "first_book = last_tie_book_first",
        "consecutive ties do not alternate (the second stream at the previous tie taken as the first)", TIES,
    ),
    "tie_order_start_trades_first": (
        "mmbot/backtest/feed.py", "first_book = True  # the window's first stamp", "first_book = False  # the window's first stamp",
        "a tie at the window's first stamp puts the trades first (the book streams are pushed first)", TIES,
    ),
    "tie_order_last_emitter_reversed": (
        "mmbot/backtest/feed.py", "first_book = True  # the book emitted last", "first_book = False  # the book emitted last",
        "the stream that emitted last before the tie goes second", TIES,
    ),
    "tie_order_file_first_row_trusted": (
        "mmbot/backtest/feed.py", "if overlap or t in ambiguous:", "if overlap:",
        "a tie at a later file's first row (the heap re-seated by a pop) is claimed resolved", TIES,
    ),
    "tie_order_overlap_trusted": (
        "mmbot/backtest/feed.py",
        [("if overlap or t in ambiguous:", "if t in ambiguous:"),
         ("    if overlap:\n        unresolved = stamps", "    if False:\n        unresolved = stamps")],
        None, "ties between files of one kind overlapping in time are claimed resolved", TIES,
    ),
    "tie_order_unresolved_chain_trusted": (
        "mmbot/backtest/feed.py", "elif book_prev == last_tie and last_tie_book_first is not None:",
        "elif book_prev == last_tie:",
        "a tie right after an unresolved one is resolved from it", TIES,
    ),
    "tie_order_stamps_straddle_batches": (
        "mmbot/backtest/feed.py", "        cut = int(np.searchsorted(ts, ts[-1], \"left\"))  # the rows at the last stamp stay",
        "        cut = len(ts)  # the rows at the last stamp stay",
        "the tie pass's batches not re-cut at stamps: a tie whose book rows straddle a batch edge is decided twice", TIES,
    ),
    # Hostile review 40: a tie split by a per-delta chunk edge (F1), files whose rows touch (F2).
    "tie_order_chunk_split_ignored": (
        "mmbot/backtest/feed.py", "                if first_book is None or split:", "                if first_book is None:",
        "a tie a per-delta chunk edge splits is replayed per message (the timers due there fire elsewhere)", SPLIT,
    ),
    "tie_order_chunk_edge_off_by_one": (
        "mmbot/backtest/feed.py", "(first_item + (i_end - i) + (j_end - j) - 1) // chunk_rows",
        "(first_item + (i_end - i) + (j_end - j)) // chunk_rows",
        "a chunk edge right after a tie's last item taken as splitting it", SPLIT,
    ),
    "tie_order_chunk_not_passed": (
        "mmbot/backtest/run.py", "    order = tie_order(catalog_dir, instrument_id, start, end, cfg.run.chunk_size)",
        "    order = tie_order(catalog_dir, instrument_id, start, end)",
        "choose_feed checks the chunk edges of the default chunk size, not run.chunk_size", SPLIT,
    ),
    "tie_order_publishing_ties_only": (
        "mmbot/backtest/feed.py",
        "    ties = trade_ties(catalog_dir, instrument_id, start_ns, end_ns)\n    books = _window_files(",
        "    ties = trade_ties(catalog_dir, instrument_id, start_ns, end_ns)\n    if not ties:\n        return NO_TIES\n"
        "    books = _window_files(",
        "the tie pass runs only when a trade ties a publishing row: a chunk edge inside a tie with an inner row is missed "
        "(hostile review 40b F1)", "tests/test_feed_identity.py::"
        "test_a_trade_tied_with_a_non_publishing_row_split_by_a_chunk_edge_replays_per_delta",
    ),
    "tie_order_join_by_name": (
        "mmbot/backtest/feed.py",
        "            if first and last is not None and not (k == 0 and after_ns is not None and lo <= after_ns):",
        "            if first and last is not None and lo > last:",
        "a file's stream taking over after a pop is told by its name, not its first row (a copied-in file's name lies)",
        TIES,
    ),
    "tie_order_book_first_ignored": (
        "mmbot/backtest/feed.py", "t_kind[book_first_ns[at] == t_ts] = 2", "t_kind[book_first_ns[at] == t_ts] = 0",
        "the per-message merge puts the trades first at the book-first stamps too", TIES_E2E,
    ),
    "tie_order_not_handed_to_the_feed": (
        "mmbot/backtest/run.py",
        "chunk_rows=cfg.run.chunk_size,\n                                      book_first_ns=order.book_first_ns)",
        "chunk_rows=cfg.run.chunk_size,\n                                      book_first_ns=None)",
        "choose_feed does not hand the tie order to the message feed", TIES_E2E,
    ),
    "tie_order_messages_not_carried": (
        "mmbot/backtest/feed.py", "            if _in_sorted(book_first, horizon):", "            if False:",
        "a chunk ending at a book-first stamp does not carry its messages there into the next chunk", TIES,
    ),
    "tie_order_trades_at_stamp_in_chunk": (
        "mmbot/backtest/feed.py",
        "                k = int(np.searchsorted(t_ts, horizon, side=\"left\"))  # trades before the held messages",
        "                k = int(np.searchsorted(t_ts, horizon, side=\"right\"))  # trades before the held messages",
        "a chunk ending at a book-first stamp takes the trades at it (before the messages carried on)", TIES,
    ),
    "tie_order_trades_split_from_messages": (
        "mmbot/backtest/feed.py",
        [("                held, held_ts = msgs[cut:], m_ts[cut:]\n                msgs, m_ts = msgs[:cut], m_ts[:cut]\n",
          "                held, held_ts = [], m_ts[:0]\n")],
        None, "a chunk ending at a book-first stamp keeps its messages and sends the trades at it with the next chunk "
        "(the engine flushes the timers due at that stamp between them)", TIES_E2E,
    ),
    # ... and on a snapshot start's own stream (``snapshot_tie_order``), session 33.
    "snapshot_tie_order_not_handed": (
        "mmbot/backtest/run.py", "                                                book_first_ns=order.book_first_ns)",
        "                                                book_first_ns=None)",
        "the snapshot start's feed is not given the tie order of its stream", SNAPSHOT_TIES,
    ),
    "snapshot_tie_order_rest_skipped": (
        "mmbot/backtest/feed.py", "    rest = [] if cut else _window_files(books, after + 1, end_ns)", "    rest = []",
        "a snapshot start orders only the ties of its dry pass's rows, not the recorded rest's", SNAPSHOT_TIES,
    ),
    "snapshot_tie_order_kept_for_any_key": (
        "mmbot/backtest/feed.py", "    if _snapshot_order_kept is not None and _snapshot_order_kept[0] == key:",
        "    if _snapshot_order_kept is not None:",
        "the last snapshot start's tie order is reused for another window", SNAPSHOT_TIES,
    ),
    "snapshot_tie_order_head_publish_rows_only": (
        "mmbot/backtest/feed.py",
        "    rows = np.fromiter((d.ts_init for msgs in head for m in msgs for d in m.deltas), dtype=np.int64)",
        "    rows = np.fromiter((m.ts_init for msgs in head for m in msgs), dtype=np.int64)",
        "a snapshot start's dry-pass stream taken as its publishing rows only", SNAPSHOT_TIES,
    ),
    "nautilus_model_per_message_allowed": (
        "mmbot/config/backtest.py",
        "    if run.feed == \"per_message\" and venue.fill_model == \"nautilus\":",
        "    if False:",
        "the config accepts run.feed = per_message with Nautilus' own fill model",
    ),
    "pretrade_denies_at_the_limit": (
        "strategies/risk/pretrade.py", "        if notional > limit:", "        if notional >= limit:",
        "an order exactly at max_notional_per_order is denied", PRETRADE,
    ),
    "pretrade_no_multiplier": (
        "strategies/risk/pretrade.py", "        notional = quantity.as_double() * px * multiplier",
        "        notional = quantity.as_double() * px", "the contract multiplier is left out", PRETRADE,
    ),
    "pretrade_reduce_only_checked": (
        "strategies/risk/pretrade.py", "        if not limit or order.is_reduce_only:", "        if not limit:",
        "reduce-only orders (a flatten) are denied too", PRETRADE,
    ),
    "pretrade_market_own_side": (
        "strategies/risk/pretrade.py",
        "            p = book.best_ask_price() if order.side == OrderSide.BUY else book.best_bid_price()",
        "            p = book.best_bid_price() if order.side == OrderSide.BUY else book.best_ask_price()",
        "a market order valued at its own side's best", PRETRADE,
    ),
    "pretrade_amend_unchecked": (
        "strategies/risk/pretrade.py", "        elif type(command) is ModifyOrder:", "        elif False:",
        "amends pass unchecked", PRETRADE,
    ),
    "pretrade_not_installed": (
        "mmbot/backtest/run.py", "        install_pretrade_check(engine.kernel)\n", "",
        "the backtest builder does not install the check", PRETRADE,
    ),
    "settled_ignores_amend_target": (
        "strategies/planner.py", "                if rec.req_ticks != targets[i]:",
        "                if rec.ticks != targets[i]:",
        "the planner skips a side whose amend in flight asks for another price than the target (no stale pull)",
        SHORTCUTS,
    ),
    "settled_without_fair_refresh": (
        "strategies/planner.py", "                rec.fair_at = fair\n            elif st == PENDING_AMEND:",
        "                pass\n            elif st == PENDING_AMEND:",
        "the skipped side's resting quotes are not confirmed at the new fair (stale rule measured from an older fair)",
        SHORTCUTS,
    ),
    "settled_ignores_beyond_limit": (
        "strategies/planner.py", "            if slots[i] is not None:\n                return False",
        "            if False:\n                return False",
        "the planner skips a side although an order rests beyond the inventory limit (not pulled)", SHORTCUTS,
    ),
    "settled_under_soft_block": (
        "strategies/planner.py", "        if shortcut and not block_bid and self._settled(",
        "        if shortcut and self._settled(",
        "the planner skips the bid side although the imbalance guard blocks it (no pull by age)", SHORTCUTS,
    ),
    "settled_with_empty_level": (
        "strategies/planner.py", "            if rec is None:\n                return False",
        "            if rec is None:\n                continue",
        "the planner skips a side with an empty level (no new order)", SHORTCUTS,
    ),
    "settled_pending_submit_off_target": (
        "strategies/planner.py", "            elif st != PENDING_SUBMIT or rec.ticks != targets[i]:",
        "            elif st != PENDING_SUBMIT:",
        "the planner skips a side whose order on its way in is off its target (no stale pull)", SHORTCUTS,
    ),
    "allowed_levels_not_refreshed": (
        "strategies/planner.py", "        if position_lots != self._n_pos:", "        if self._n_pos is None:",
        "the levels each side may quote are not recomputed when the position changes", SHORTCUTS,
    ),
    "sim_inline_read_one_lot_high": (
        "adapters/sim/exec_client.py",
        "                                              size_prec).raw // lot_raw\n",
        "                                              size_prec).raw // lot_raw + 1\n",
        "the simulator's inlined level read (session 21) sizes our level one lot high",
        "tests/test_queue_engine.py tests/test_queue_timeline.py tests/test_queue_e2e.py",
    ),
    "live_update_sequence_left_as_seq": (
        "adapters/bybit_live_book.py",
        "    dl[-1] = OrderBookDelta(iid, last.action, last.order, last.flags, u, last.ts_event, last.ts_init)",
        "    dl[-1] = OrderBookDelta(iid, last.action, last.order, last.flags, last.sequence, last.ts_event, "
        "last.ts_init)",
        "a live update message's last delta keeps Bybit's seq (the guard would see a gap on every message)",
        LIVE_BOOK,
    ),
    "venue_book_l2_for_the_queue_sim": (
        "mmbot/builders.py", '    return "L2_MBP" if cfg.venue.fill_model == "nautilus" else "L1_MBP"\n',
        '    return "L2_MBP"\n',
        "the venue keeps its unread L2 book under the queue simulator (the saving undone, outputs unchanged)",
        VENUE_BOOK,
    ),
    "venue_book_l1_for_nautilus": (
        "mmbot/builders.py", '    return "L2_MBP" if cfg.venue.fill_model == "nautilus" else "L1_MBP"\n',
        '    return "L1_MBP"\n', "Nautilus' own fill model gets an L1 venue (it would fill from trades only)",
        VENUE_BOOK,
    ),
    "venue_book_single_builder_literal": (
        "mmbot/builders.py", "        book_type=venue_book_type(cfg),\n", '        book_type="L2_MBP",\n',
        "the single-instrument builder ignores venue_book_type", VENUE_BOOK,
    ),
    "venue_book_portfolio_builder_literal": (
        "mmbot/builders.py", "        book_type=venue_book_type(cfg), bar_execution=False,",
        '        book_type="L2_MBP", bar_execution=False,', "the portfolio builder ignores venue_book_type",
        VENUE_BOOK,
    ),
    "sim_alert_new_name_each_time": (
        "adapters/sim/exec_client.py", "        name = free.pop() if free else self._new_alert_name()",
        "        name = self._new_alert_name()",
        "every simulator alert gets a new name again (the clock keeps each one)", ALERTS,
    ),
    "sim_alert_new_method_each_time": (
        "adapters/sim/exec_client.py",
        "        try:\n            self._clock.set_time_alert_ns(name, due + self._grace_ns, self._on_alert_cb)",
        "        try:\n            self._clock.set_time_alert_ns(name, due + self._grace_ns, self._on_alert)",
        "a new bound method per alert again (the clock keeps each one)", ALERTS,
    ),
    "sim_alert_reused_name_still_listed_raises": (
        "adapters/sim/exec_client.py", "        except KeyError:\n", "        except ZeroDivisionError:\n",
        "a reused name the live clock still lists raises instead of taking a new name",
        "tests/test_sim_alert_memory.py",
    ),
    "spill_clean_ignores_lock": (
        "mmbot/run_folder.py", "            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n        except OSError:\n            os.close(fd)  # its run is still going",
        "            pass\n        except OSError:\n            os.close(fd)  # its run is still going",
        "the next run at an --out removes a RUNNING run's spill folder (lock not checked)", SPILL,
    ),
    "spill_never_cleaned": (
        "mmbot/run_folder.py", "        _remove_dead_spills(parent, prefix)\n", "",
        "killed runs' spill folders are never removed (they pile up)", SPILL,
    ),
    "audit_at_fixed_name": (
        "mmbot/backtest/run.py", '    audit_tmp = spill_tmp / "audit.jsonl"',
        '    audit_tmp = out_dir.parent / f".{out_dir.name}.audit.jsonl"\n    audit_tmp.unlink(missing_ok=True)',
        "the audit log back at the fixed name beside --out that a second run deletes", SPILL,
    ),
    "portfolio_ledgers_do_not_spill": (
        "mmbot/backtest/portfolio.py", 'ledger_spill_dir=str(audit_tmp.parent / "ledger")', 'ledger_spill_dir=""',
        "a portfolio backtest's ledgers keep every row in memory again", "tests/test_ledger_spill.py",
    ),
    "trades_in_chunk_size_pieces": (
        "mmbot/backtest/feed.py", "TRADE_CHUNK_DIVISOR = 10 ", "TRADE_CHUNK_DIVISOR = 1 ",
        "trades decoded chunk_size at a time again (a chunk spans hours of book messages)", FEED_MEMORY,
    ),
    # The tie count's pass over the window, a record batch at a time (session 30).
    "ties_any_row_publishes": (
        "mmbot/backtest/feed.py", "                    keep &= (batch.column(1).fill_null(0).to_numpy() & F_LAST) != 0\n",
        "                    pass\n",
        "the tie count takes every book row's receive time as a publishing one", FEED_MEMORY,
    ),
    "ties_window_start_ignored": (
        "mmbot/backtest/feed.py", "                    keep &= ts >= start_ns\n", "                    pass\n",
        "the tie count reads stamps from before the window", FEED_MEMORY,
    ),
    "ties_window_end_ignored": (
        "mmbot/backtest/feed.py", "                    keep &= ts <= end_ns\n", "                    pass\n",
        "the tie count reads stamps from after the window", FEED_MEMORY,
    ),
    "ties_first_file_only": (
        "mmbot/backtest/feed.py", "    columns = [\"ts_init\", \"flags\"] if flags else [\"ts_init\"]\n    for path in paths:",
        "    columns = [\"ts_init\", \"flags\"] if flags else [\"ts_init\"]\n    for path in paths[:1]:",
        "the tie count reads the window's first file only", FEED_MEMORY,
    ),
    "ties_publish_unsorted": (
        "mmbot/backtest/feed.py", "    publish.sort()\n", "",
        "the tie count searches publishing stamps it did not sort", FEED_MEMORY,
    ),
    "ties_search_right": (
        "mmbot/backtest/feed.py", "        at = np.searchsorted(publish, ts)\n",
        "        at = np.searchsorted(publish, ts, side=\"right\")\n",
        "the tie count looks one stamp past an equal one", FEED_MEMORY,
    ),
    # Hostile review 36: the rules no test pinned before it (F3), the null stamps (F1), pre-buffering (F2).
    "ties_window_end_open": (
        "mmbot/backtest/feed.py", "                    keep &= ts <= end_ns\n", "                    keep &= ts < end_ns\n",
        "the tie count leaves out a trade and a message exactly at the window's end", REVIEW36,
    ),
    "ties_other_flag_publishes": (
        "mmbot/backtest/feed.py", "                    keep &= (batch.column(1).fill_null(0).to_numpy() & F_LAST) != 0\n",
        "                    keep &= (batch.column(1).fill_null(0).to_numpy() & (F_LAST | 64)) != 0\n",
        "the tie count takes a row flagged 64 (F_TOB) without F_LAST as publishing", REVIEW36,
    ),
    "ties_snapshot_first_trade_batch_only": (
        "mmbot/backtest/feed.py",
        "    if any(len(ts) for ts in _stamp_batches(trade_files, False, start_ns, end_ns)):",
        "    if len(next(_stamp_batches(trade_files, False, start_ns, end_ns), [])):",
        "a snapshot start looks for the window's trades in the trade file's first batch only", REVIEW36,
    ),
    "ties_snapshot_rest_every_row": (
        "mmbot/backtest/feed.py",
        "                publish = np.concatenate([publish, _publish_stamps(feed._delta_files, int(publish[-1]) + 1, end_ns)])",
        "                publish = np.concatenate([publish, *_stamp_batches(feed._delta_files, False, int(publish[-1]) + 1, end_ns)])",
        "a snapshot start counts every book row after its stamps settle, not the publishing ones", REVIEW36,
    ),
    "ties_null_stamp_not_dropped": (
        "mmbot/backtest/feed.py", "                if col.null_count:", "                if False:",
        "a trade file with a null receive time makes the tie pass a pyarrow traceback again", REVIEW36,
    ),
    "ties_prebuffered": (
        "mmbot/backtest/feed.py", "pq.ParquetFile(path, pre_buffer=False, buffer_size=SCAN_BUFFER_BYTES)",
        "pq.ParquetFile(path)",
        "the tie pass lets pyarrow pre-buffer each file's whole columns again", REVIEW36,
    ),
    "ties_whole_window_at_once": (
        "mmbot/backtest/feed.py", "SCAN_ROWS = 65_536 ", "SCAN_ROWS = 1 << 40 ",
        "the tie count reads each file whole again (memory grows with the window)", FEED_MEMORY,
    ),
    "snapshot_start_before_m0": (
        "mmbot/backtest/feed.py",
        "                book.apply_deltas(m0)\n                snap = self._snapshot(book, m0)",
        "                snap = self._snapshot(book, m0)\n                book.apply_deltas(m0)",
        "run.warmup=snapshot: the snapshot is the book before the window's first message (off by one message)",
        SNAPSHOT_START,
    ),
    "snapshot_start_warm_book_all_rows_kept": (
        "mmbot/backtest/feed.py",
        "    last_of_level[:-1] = np.any(key[1:] != key[:-1], axis=1)",
        "    last_of_level[:-1] = np.any(key[1:] != key[:-1], axis=1)\n    last_of_level[:] = np.arange(len(order)) % 2 == 0",
        "run.warmup=snapshot: the warm-up book built from the wrong row of each level",
        SNAPSHOT_START,
    ),
    "snapshot_start_warm_book_clear_dropped": (
        "mmbot/backtest/feed.py",
        "    rows = np.sort(order[last_of_level])",
        "    rows = np.sort(order[last_of_level & (action[order] != 4)])",
        "run.warmup=snapshot: the CLEARs of the warm-up not applied (levels from before a CLEAR survive)",
        SNAPSHOT_START,
    ),
    "snapshot_start_warm_book_keeps_zero_adds": (
        "mmbot/backtest/feed.py",
        "    live = np.flatnonzero(~((action == 1) & (size[:, 0] == 0) & (size[:, 1] == 0)))  # ADD of 0: no-op",
        "    live = np.arange(n)",
        "run.warmup=snapshot: a zero-size ADD (a no-op in Nautilus' L2 book) taken as a level's last row",
        SNAPSHOT_START,
    ),
    "snapshot_start_ties_on_recorded_stamps": (
        "mmbot/backtest/feed.py",
        "            ties = _ties_with(trade_files, publish, start_ns, end_ns)",
        "            ties = trade_ties(catalog_dir, instrument_id, start_ns, end_ns)",
        "run.feed=auto decides a snapshot start on the catalog's stamps, not the stream it replays (H2)",
        SNAPSHOT_START + " tests/test_hostile_review33.py",
    ),
    "snapshot_start_ties_rest_not_counted": (
        "mmbot/backtest/feed.py",
        "            if not feed.stamps_cut:  # then every message as recorded",
        "            if False:  # then every message as recorded",
        "run.feed=auto: a snapshot start's ties counted on its shifted first messages only (the rest missed)",
        SNAPSHOT_START + " tests/test_hostile_review33.py",
    ),
    "snapshot_start_warm_book_last_piece_only": (
        "mmbot/backtest/feed.py",
        "                    kept = _last_row_of_each_level(part if kept is None else pa.concat_tables([kept, part]))",
        "                    kept = _last_row_of_each_level(part)",
        "run.warmup=snapshot: the warm-up book streamed in pieces keeps only the last piece's levels",
        SNAPSHOT_START,
    ),
    "catalog_meta_trades_unchecked": (
        "mmbot/catalog_store.py",
        '    "trade_tick": _PRICE_SIZE, "mark_price_update": ("instrument_id", "price_precision"),',
        '    "mark_price_update": ("instrument_id", "price_precision"),',
        "catalog: trade files' decode metadata not checked (a missing precision aborts the run in Rust)",
        "tests/test_catalog_decode_metadata.py tests/test_hostile_review34.py",
    ),
    "catalog_meta_precision_not_compared": (
        "mmbot/catalog_store.py",
        '    if instrument_precisions is not None:',
        '    if False:',
        "catalog: a file's precisions not compared with the instrument's (a traceback inside the engine)",
        "tests/test_catalog_decode_metadata.py tests/test_hostile_review34.py",
    ),
    "catalog_meta_instrument_not_compared": (
        "mmbot/catalog_store.py",
        '    if urisafe_identifier(iid) != folder:',
        '    if False:',
        'catalog: a file naming another instrument accepted',
        "tests/test_catalog_decode_metadata.py tests/test_hostile_review34.py",
    ),
    "catalog_meta_run_unchecked": (
        "mmbot/backtest/run.py",
        '    listing = list_catalog(catalog_dir, check=[instrument_id])',
        '    listing = list_catalog(catalog_dir, check=[])',
        "catalog: a backtest does not check its own instrument's files",
        "tests/test_catalog_decode_metadata.py tests/test_hostile_review34.py",
    ),
    "catalog_meta_every_instrument": (
        "mmbot/catalog_store.py",
        'and (check is None or id_dir.name in check):',
        ':',
        "catalog: a replay refused over another instrument's broken file",
        "tests/test_catalog_decode_metadata.py tests/test_hostile_review34.py",
    ),
    "catalog_meta_marks_unchecked": (
        "mmbot/catalog_store.py",
        '    "trade_tick": _PRICE_SIZE, "mark_price_update": ("instrument_id", "price_precision"),',
        '    "trade_tick": _PRICE_SIZE,',
        'catalog: mark-price files not checked (a Rust panic after the whole replay; review 34 F2)',
        "tests/test_catalog_decode_metadata.py tests/test_hostile_review34.py",
    ),
    "catalog_meta_folder_is_the_id": (
        "mmbot/catalog_store.py",
        '    if urisafe_identifier(iid) != folder:',
        '    if iid != folder:',
        "catalog: a file's folder compared with its raw instrument id, not Nautilus' URI-safe one (review 34 F3)",
        "tests/test_catalog_decode_metadata.py tests/test_hostile_review34.py",
    ),
    "catalog_meta_long_value_parsed": (
        "mmbot/catalog_store.py",
        '        if not (len(v) <= 2 and v.isascii() and v.isdigit() and int(v) <= 16):',
        '        if not (v.isascii() and v.isdigit() and int(v) <= 16):',
        'catalog: a precision of thousands of digits parsed (a traceback; review 34 F1)',
        "tests/test_catalog_decode_metadata.py tests/test_hostile_review34.py",
    ),
    "catalog_meta_import_funding_unchecked": (
        "mmbot/catalog_store.py",
        '    for f in sorted(folder.glob("*.parquet")):  # one line, not the decoder\'s TypeError (review 34 F2)',
        '    for f in []:',
        "catalog: an import merging funding decodes the catalog's funding files unchecked (a TypeError traceback; review 34 F2)",
        "tests/test_hostile_review34.py::test_F2c_importing_funding_over_a_funding_file_nautilus_cannot_decode_is_one_line",
    ),
    "catalog_meta_nested_unchecked": (
        "mmbot/catalog_store.py",
        '        for f in sorted(type_dir.glob("*/*/**/*.parquet")):',
        '        for f in []:',
        "catalog: a file one folder deeper (data/<kind>/old/<id>/), which Nautilus replays too, not checked (review 35 D1)",
        "tests/test_hostile_review35.py",
    ),
    "catalog_meta_nested_every_instrument": (
        "mmbot/catalog_store.py",
        '            if check is None or f.parent.name in check:',
        '            if True:',
        "catalog: a replay refused over another instrument's nested file (review 35 D1)",
        "tests/test_hostile_review35.py",
    ),
    "warm_key_without_ctime": (
        "mmbot/backtest/feed.py",
        '    return str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns',
        '    return str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns',
        'run.warmup=snapshot: the hand-over key without ctime (a same-size rewrite with its mtime put back is taken for the old file; review 34 F6)',
        "tests/test_hostile_review34.py::test_F6_a_same_size_same_mtime_rewrite_is_not_handed_stale_rows",
    ),
    "warm_handover_any_start": (
        "mmbot/backtest/feed.py",
        "        return (self._iid.value, self.book_from_ns, self.start_ns, tuple(_file_version(p) for p in self._warm_files))",
        "        return (self._iid.value, self.book_from_ns, tuple(_file_version(p) for p in self._warm_files))",
        "run.warmup=snapshot: the dry tie pass's warm-up rows taken by a feed of another start from the same snapshot",
        "tests/test_window_warmup.py::test_the_dry_tie_pass_hands_its_warm_up_rows_to_the_run_of_the_same_window",
    ),
    "warm_handover_never_given": (
        "mmbot/backtest/feed.py",
        "    _warm_handover = feed.warm_rows_read  # the run's own feed of this window takes it (``_warm_book``)",
        "    _warm_handover = None",
        "run.warmup=snapshot: the dry tie pass's warm-up rows not handed over (a single backtest reads its warm-up twice)",
        "tests/test_window_warmup.py::test_the_dry_tie_pass_hands_its_warm_up_rows_to_the_run_of_the_same_window",
    ),
    "snapshot_start_stamped_at_publish": (
        "mmbot/backtest/feed.py",
        "        ts = m0.deltas[0].ts_init",
        "        ts = m0.ts_init",
        "run.warmup=snapshot: the snapshot's rows stamped from the message's publishing row, not its first",
        SNAPSHOT_START,
    ),
    "snapshot_start_drops_deepest_level": (
        "mmbot/backtest/feed.py",
        "            for lv in levels:",
        "            for lv in levels[:-1]:",
        "run.warmup=snapshot: the snapshot leaves out each side's deepest level",
        SNAPSHOT_START,
    ),
    "snapshot_start_not_flagged_snapshot": (
        "mmbot/backtest/feed.py",
        "        snap_flag = F_SNAPSHOT",
        "        snap_flag = 0",
        "run.warmup=snapshot: the snapshot's rows are not flagged F_SNAPSHOT",
        SNAPSHOT_START,
    ),
    "snapshot_start_counts_m0_rows": (
        "mmbot/backtest/feed.py",
        "                st.delta_rows += len(snap.deltas) - len(m0.deltas)",
        "                st.delta_rows += len(snap.deltas)",
        "run.warmup=snapshot: the replaced message's rows still counted as replayed stream rows",
        SNAPSHOT_START,
    ),
    "snapshot_start_burst_not_shifted": (
        "mmbot/backtest/feed.py",
        "                    if lo >= restamp_from:",
        "                    if True:",
        "run.warmup=snapshot: messages received within the snapshot's rows' stamps are not moved after it "
        "(time goes backwards; hostile review 32 F1/F2)",
        SNAPSHOT_START,
    ),
    "snapshot_start_not_cut_at_end": (
        "mmbot/backtest/feed.py",
        "                if end is not None and m.ts_init > end:  # cut by the window's end",
        "                if False:  # cut by the window's end",
        "run.warmup=snapshot: a snapshot (or shifted message) received after the window's end is published (F3)",
        SNAPSHOT_START,
    ),
    "snapshot_start_ignores_ties": (
        "mmbot/backtest/run.py",
        "        if order.unresolved:",
        "        if False:",
        "run.warmup=snapshot with run.feed=auto: trade/book receive-time ties whose order is not derived no longer "
        "replay per delta (F7)",
        SNAPSHOT_START,
    ),
    "cache_key_without_start": (
        "mmbot/backtest/feed.py",
        "        return (self.catalog_dir, self.instrument_id, self.start_ns, self.end_ns, self.chunk_rows,",
        "        return (self.catalog_dir, self.instrument_id, self.end_ns, self.chunk_rows,",
        "wf cache: two windows with the same end (two snapshot starts built from one snapshot) share an entry",
        "tests/test_window_warmup.py",
    ),
    "snapshot_start_with_per_delta_allowed": (
        "mmbot/config/backtest.py",
        '    if run.warmup == "snapshot" and (run.feed == "per_delta" or venue.fill_model == "nautilus"):',
        '    if False:',
        "run.warmup=snapshot accepted with the per-delta feed / Nautilus fill model (silently replays)",
        SNAPSHOT_START,
    ),
    "snapshot_start_in_portfolio_allowed": (
        "mmbot/config/backtest.py",
        '    if base.run.warmup == "snapshot":  # each instrument',
        '    if False:  # each instrument',
        "run.warmup=snapshot accepted by a [portfolio] config (every trial of its wf fails; F5)",
        SNAPSHOT_START,
    ),
    "wf_space_checks_first_choice_only": (
        "mmbot/tuning/runner.py",
        "    if spec.choices is not None:\n        return list(spec.choices)",
        "    if spec.choices is not None:\n        return [spec.choices[0]]",
        "wf prepare validates only a searched key's first choice (a clashing choice fails every trial; F6)",
        SNAPSHOT_START,
    ),
    "heap_release_at_end_only": (
        "mmbot/backtest/feed.py",
        "        if since_release >= heap.RELEASE_EVERY_ITEMS:\n            heap.release_free_heap()\n            since_release = 0\n",
        "",
        "glibc's free pages given back once, after the replay, not after replayed chunks", HEAP,
    ),
    "heap_release_every_chunk": (
        "mmbot/backtest/feed.py", "        if since_release >= heap.RELEASE_EVERY_ITEMS:",
        "        if True:",
        "a trim after every chunk whatever its size (chunk_size=1: +24 % wall, review 37 F6)", HEAP,
    ),
    "heap_release_before_replay": (
        "mmbot/backtest/feed.py",
        "        engine.add_data(data=chunk, validate=False, sort=True)\n",
        "        engine.add_data(data=chunk, validate=False, sort=True)\n        heap.release_free_heap()\n",
        "a trim between adding a chunk and replaying it (review 37 F5d)", HEAP,
    ),
    "heap_trim_threshold_param": (
        "mmbot/backtest/heap.py", "_M_MMAP_THRESHOLD = -3", "_M_MMAP_THRESHOLD = -1",
        "mallopt sets M_TRIM_THRESHOLD instead of the mmap threshold (review 37 F5a)", HEAP,
    ),
    "heap_threshold_4k": (
        "mmbot/backtest/heap.py", "MMAP_THRESHOLD_BYTES = 4 << 20", "MMAP_THRESHOLD_BYTES = 1 << 12",
        "the threshold at 4 KiB (review 37 F5b)", HEAP,
    ),
    "heap_mallopt_never_called": (
        "mmbot/backtest/heap.py",
        "    _threshold_fixed = bool(lib) and lib.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1",
        "    _threshold_fixed = bool(lib)",
        "fix_mmap_threshold answers True without calling mallopt (review 37 F5c)", HEAP,
    ),
    "heap_trim_first_call_only": (
        "mmbot/backtest/heap.py", "    lib.malloc_trim(0)\n    return True",
        "    if not getattr(lib, 'trimmed', False):\n        lib.malloc_trim(0)\n        lib.trimmed = True\n    return True",
        "malloc_trim called on the first release only (review 37 F5e)", HEAP,
    ),
    "heap_user_threshold_overridden": (
        "mmbot/backtest/heap.py", "    if user_set_threshold():\n        return False\n", "",
        "a threshold the user set for glibc overridden (review 37 F7)", HEAP,
    ),
    "heap_force_stop_no_release": (
        "mmbot/backtest/feed.py",
        "            if since_release:  # the replay ends here: its pages back before the report (review 38 F2)\n"
        "                heap.release_free_heap()\n", "",
        "a forced stop returns with the replay's free pages kept (review 38 F2)", HEAP,
    ),
    "heap_tunable_substring": (
        "mmbot/backtest/heap.py",
        '    return any(pair.partition("=")[0] == "glibc.malloc.mmap_threshold" and "=" in pair\n'
        '               for pair in env.get("GLIBC_TUNABLES", "").split(":"))',
        '    return "glibc.malloc.mmap_threshold" in env.get("GLIBC_TUNABLES", "")',
        "a misspelt tunable glibc ignores taken for the user's threshold (review 38 F3)", HEAP,
    ),
    "heap_env_at_call_time": (
        "mmbot/backtest/heap.py", "    env = _START_ENVIRON if environ is None else environ",
        "    env = os.environ if environ is None else environ",
        "a variable set after the start (for children) taken for this process's threshold (review 38 F3)", HEAP,
    ),
    "arrow_pool_never_set": (
        "mmbot/backtest/heap.py", "    pa.set_memory_pool(pa.system_memory_pool())\n", "",
        "Arrow's buffers left in pyarrow's mimalloc (session 32)", HEAP,
    ),
    "arrow_pool_user_choice_overridden": (
        "mmbot/backtest/heap.py",
        "    if \"ARROW_DEFAULT_MEMORY_POOL\" in _START_ENVIRON or \"ARROW_DEFAULT_MEMORY_POOL\" in os.environ:\n"
        "        return False\n",
        "",
        "the pool the user named in ARROW_DEFAULT_MEMORY_POOL replaced (session 32)", HEAP,
    ),
    "arrow_pool_after_sizing": (
        "mmbot/backtest/run.py", '    arrow_pool_to_glibc()  # before the catalog passes below read through Arrow (same module)\n    if cfg.portfolio is not None:  # several instruments in one node (docs/portfolio.md)\n        from mmbot.backtest.portfolio import run_portfolio_backtest\n\n        return run_portfolio_backtest(cfg, out_dir, progress)\n    catalog_dir = cfg.path(cfg.run.catalog)\n    instrument_id = cfg.run.instrument\n    window = resolve_window(catalog_dir, instrument_id, cfg.run.start, cfg.run.end)\n    window, book_from_ns, warmup_note = snapshot_start(cfg, window, catalog_dir, instrument_id)\n    # Sizes in USDT notional become base units of this instrument here, before anything else reads\n    # the config (its hash, the report, config.resolved.json): docs/config.md, "Sizes in notional".\n    cfg, sizing = resolve_backtest_sizing(cfg, str(catalog_dir), instrument_id, window)\n',
        '    if cfg.portfolio is not None:  # several instruments in one node (docs/portfolio.md)\n        from mmbot.backtest.portfolio import run_portfolio_backtest\n\n        return run_portfolio_backtest(cfg, out_dir, progress)\n    catalog_dir = cfg.path(cfg.run.catalog)\n    instrument_id = cfg.run.instrument\n    window = resolve_window(catalog_dir, instrument_id, cfg.run.start, cfg.run.end)\n    window, book_from_ns, warmup_note = snapshot_start(cfg, window, catalog_dir, instrument_id)\n    # Sizes in USDT notional become base units of this instrument here, before anything else reads\n    # the config (its hash, the report, config.resolved.json): docs/config.md, "Sizes in notional".\n    cfg, sizing = resolve_backtest_sizing(cfg, str(catalog_dir), instrument_id, window)\n    arrow_pool_to_glibc()\n',
        "Arrow's pool switched after the first catalog pass (session 32)", HEAP,
    ),
    "sort_fills_first_tie_only": (
        "mmbot/report/metrics.py", "    first, second = trade_id[tie], trade_id[tie + 1]",
        "    first, second = trade_id[tie[:1]], trade_id[tie[:1] + 1]",
        "only the first pair of equal-time neighbours checked (review 37 F4)", SORT_FILLS,
    ),
    "sort_fills_categorical_as_text": (
        "mmbot/report/metrics.py", "        if not (isinstance(column.dtype, pd.StringDtype)\n",
        "        if not (True or isinstance(column.dtype, pd.StringDtype)\n",
        "categorical or non-text trade ids compared as text (review 37 F1, F3)", SORT_FILLS,
    ),
    "sort_fills_named_index": (
        "mmbot/report/metrics.py", " and idx.step == 1 and idx.name is None):", " and idx.step == 1):",
        "a named index kept by the fast path (review 37 F2)", SORT_FILLS,
    ),
    "sort_fills_duplicate_columns": (
        "mmbot/report/metrics.py", "    if not fills.columns.is_unique:\n        return False\n", "",
        "a frame with a duplicated column label handed back (review 37 F3)", SORT_FILLS,
    ),
    "heap_threshold_not_fixed": (
        "mmbot/backtest/run.py", "    fix_mmap_threshold()  # before the replay allocates",
        "    pass  # before the replay allocates",
        "glibc's mmap threshold left dynamic (a chunk's buffers fragment the heap)", HEAP,
    ),
    "heap_per_delta_not_released": (
        "mmbot/backtest/run.py", "            node.run()\n            release_free_heap()",
        "            node.run()",
        "the per-delta replay's free pages kept through the report", HEAP,
    ),
    "heap_trim_not_called": (
        "mmbot/backtest/heap.py", "    lib.malloc_trim(0)\n    return True", "    return True",
        "release_free_heap answers True without asking glibc", HEAP,
    ),
    "sort_fills_ties_unchecked": (
        "mmbot/report/metrics.py", "    if not by_trade_id:\n        return True", "    if True:\n        return True",
        "a frame in time order taken as sorted whatever its trade ids at equal times", SORT_FILLS,
    ),
    "sort_fills_any_index": (
        "mmbot/report/metrics.py",
        "    if not (isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1 and idx.name is None):\n"
        "        return False\n    if not fills.columns.is_unique:",
        "    if not fills.columns.is_unique:",
        "a sorted frame under another index handed back without its index reset", SORT_FILLS,
    ),
    "sort_fills_ties_reversed": (
        "mmbot/report/metrics.py", "    return bool((first <= second).all())", "    return bool((first >= second).all())",
        "trade ids at equal times checked in the wrong direction", SORT_FILLS,
    ),
    "sort_fills_time_unchecked": (
        "mmbot/report/metrics.py", "    if not bool((ts[1:] >= ts[:-1]).all()):\n        return False\n", "",
        "a frame out of time order taken as sorted", SORT_FILLS,
    ),
    "ledger_frames_rows_loaded_whole": (
        "mmbot/backtest/ledger.py", "            yield from self._spill.row_chunks(name)\n",
        "            yield self._spill.row_list(name)\n",
        "the report's frames read every spilled row as one list of tuples (session 32)", LEDGER,
    ),
    "ledger_orders_not_in_creation_order": (
        "mmbot/backtest/ledger.py",
        '            table = table.take(pc.sort_indices(table["seq"]))\n',
        '            pass\n',
        "the orders frame in spill order, not creation order (session 32)", LEDGER + " tests/test_ledger_frames.py",
    ),
    "ledger_frame_chunks_kept": (
        "mmbot/backtest/ledger.py", "    frame = table.combine_chunks().to_pandas()\n", "    frame = table.to_pandas()\n",
        "the frame's columns left in one Arrow chunk per spill (session 32)", LEDGER + " tests/test_ledger_frames.py",
    ),
    "ledger_frame_in_memory_rows_dropped": (
        "mmbot/backtest/ledger.py", "            yield from self._spill.row_chunks(name)\n        yield from in_memory\n",
        "            yield from self._spill.row_chunks(name)\n            return\n        yield from in_memory\n",
        "a spilling ledger's frames without the rows still in memory (session 32)", LEDGER,
    ),
    "ledger_frame_refused_value_raises": (
        "mmbot/backtest/ledger.py", "    except (pa.ArrowInvalid, pa.ArrowTypeError):\n", "    except ():\n",
        "a value Arrow refuses raises at the report instead of its text as before (session 32)",
        "tests/test_ledger_frames.py",
    ),
    "ledger_rows_of_mixed_widths": (
        "mmbot/backtest/ledger.py", "        columns = list(zip(*rows, strict=True))\n", "        columns = list(zip(*rows))\n",
        "rows of two widths cut to the shortest (hostile review 39 F3)", "tests/test_ledger_frames.py",
    ),
    "ledger_rows_width_unchecked": (
        "mmbot/backtest/ledger.py", "    if len(columns) != len(names):\n", "    if False:\n",
        "a row longer than the columns loses its extra value (hostile review 39 F3)", "tests/test_ledger_frames.py",
    ),
    "ledger_integer_nulls_allowed": (
        "mmbot/backtest/ledger.py", "    if column.null_count and pa.types.is_integer(arrow_type):\n", "    if False:\n",
        "None in an integer column makes it float64 (hostile review 39 F2)", "tests/test_ledger_frames.py",
    ),
    "ledger_frame_types_left_to_arrow": (
        "mmbot/backtest/ledger.py", "    return frame.astype(dtypes)\n", "    return frame\n",
        "the text columns' type left to pandas' options (hostile review 39 F6)", "tests/test_ledger_frames.py",
    ),
    "ledger_in_memory_orders_as_tuples": (
        "mmbot/backtest/ledger.py",
        "        in_memory = list(self._orders.values())\n",
        "        in_memory = [tuple(rec[c] for c in (\"seq\", *ORDER_FRAME_COLUMNS)) for rec in self._orders.values()]\n",
        "the orders in memory through a tuple per row (hostile review 39 F1)", LEDGER,
    ),
    "arrow_pool_chosen_pool_replaced": (
        "mmbot/backtest/heap.py", "    if pa.default_memory_pool().backend_name != \"mimalloc\":\n", "    if False:\n",
        "a pool the user set with pa.set_memory_pool replaced (hostile review 39 F4)", HEAP,
    ),
    "arrow_pool_env_at_start_only": (
        "mmbot/backtest/heap.py",
        "    if \"ARROW_DEFAULT_MEMORY_POOL\" in _START_ENVIRON or \"ARROW_DEFAULT_MEMORY_POOL\" in os.environ:\n",
        "    if \"ARROW_DEFAULT_MEMORY_POOL\" in _START_ENVIRON:\n",
        "ARROW_DEFAULT_MEMORY_POOL set after the start replaced (hostile review 39 F4)", HEAP,
    ),
    "ledger_empty_strings_inferred": (
        "mmbot/backtest/ledger.py", [
            ("    table = pa.concat_tables(tables) if tables else pa.table([pa.array([], t) for t in types], names=names)",
             "    table = pa.concat_tables(tables) if tables else pa.table([pa.array([], pa.null() if t == pa.large_string() "
             "else t) for t in types], names=names)"),
            ("    return frame.astype(dtypes)\n", "    return frame.astype({k: v for k, v in dtypes.items() if v != \"str\"})\n"),
        ], None,
        "string columns typed by inference (an empty run's are Arrow null; since session 32 two edits: the "
        "empty table's types and the frame's astype, each alone fixes them)", LEDGER,
    ),
    "ledger_timeline_loaded_whole": (
        "mmbot/backtest/ledger.py",
        '            for rows in self._spill.row_chunks("timeline"):\n                yield from rows\n',
        '            yield from self._spill.row_list("timeline")\n',
        "the own-quote timeline's spilled rows loaded whole for the report", LEDGER,
    ),
    "catalog_memo_always_on": (
        "mmbot/backtest/feed.py", "    if not _cache_on:\n        return compute()\n    root = Path(catalog_dir).resolve()",
        "    root = Path(catalog_dir).resolve()",
        "setup reads kept outside a wf worker too (a single backtest)", MEMO,
    ),
    "catalog_memo_ignores_file_versions": (
        "mmbot/backtest/feed.py", "    key = (name, str(root), instrument_id, args, _instrument_files_digest(root, instrument_id))",
        "    key = (name, str(root), instrument_id, args)",
        "a catalog file rewritten under its name: the kept window, instrument and price used", MEMO,
    ),
    "catalog_memo_ignores_args": (
        "mmbot/backtest/feed.py", "    key = (name, str(root), instrument_id, args, _instrument_files_digest(root, instrument_id))",
        "    key = (name, str(root), instrument_id, (), _instrument_files_digest(root, instrument_id))",
        "another window (or instrument) gets the first one's kept result", MEMO,
    ),
    "catalog_memo_unbounded": (
        "mmbot/backtest/feed.py", "    while len(_memo) > MEMO_ENTRIES or (",
        "    while len(_memo) > 10 ** 9 or (",
        "the kept results grow with every window a worker sees", MEMO,
    ),
    "catalog_memo_never_refreshed": (
        "mmbot/backtest/feed.py", "        _memo[key] = _memo.pop(key)  # most recently used last\n", "",
        "a result used every trial is the first to go (oldest inserted, not least recently used)", MEMO,
    ),
    "catalog_memo_array_bytes_unbounded": (
        "mmbot/backtest/feed.py", "sum(map(_array_bytes, _memo.values())) > MEMO_ARRAY_BYTES",
        "sum(map(_array_bytes, _memo.values())) > 10 ** 18",
        "the funding arrays kept grow with every window (only the entry count bounds them)", MEMO,
    ),
    "catalog_memo_walks_every_instrument": (
        "mmbot/backtest/feed.py", "os.walk(data / kind / folder, followlinks=True)",
        "os.walk(data / kind, followlinks=True)",
        "every instrument's files in the key (another instrument's new file: read again; cost grows with the catalog)",
        MEMO,
    ),
    "catalog_memo_version_file_ignored": (
        "mmbot/backtest/feed.py", "        st = os.stat(root / VERSION_FILE)\n",
        "        st = os.stat(root / 'no-such-file')\n",
        "the catalog's version file left out of the key (its check skipped on a kept window)", MEMO,
    ),
    "funding_arrays_writable": (
        "mmbot/backtest/run.py", "        a.setflags(write=False)  # shared by the trials of a wf worker (``catalog_memo``)\n",
        "        pass\n",
        "the funding arrays a wf worker shares between trials can be written", MEMO,
    ),
    "live_update_only_last_row": (
        "adapters/bybit_live_book.py", "    return OrderBookDeltas(iid, dl)\n",
        "    return OrderBookDeltas(iid, dl[-1:])\n",
        "a live update message handed on with its last row only", LIVE_BOOK,
    ),
}


def _copy(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def run(names: list[str]) -> int:
    rows, missed = [], 0
    for name in names:
        rel, old, new, what, *test = MUTANTS[name]
        test_file = test[0] if test else IDENTITY
        edits = old if isinstance(old, list) else [(old, new)]  # a list: several edits, new is None
        with tempfile.TemporaryDirectory(prefix=f"mmbot-mutant-{name}-") as tmp:
            root = Path(tmp)
            _copy(root)
            path = root / rel
            text = path.read_text()
            for original, broken in edits:
                assert text.count(original) == 1, f"{name}: the original text is not found once in {rel}"
                text = text.replace(original, broken)
            path.write_text(text)
            r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                *test_file.split()], cwd=root, capture_output=True, text=True,
                               env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
            caught = r.returncode != 0
            first = next((ln for ln in r.stdout.splitlines() if ln.startswith("FAILED")), "")
            rows.append((name, what, "caught" if caught else "MISSED", first.split(" - ")[0].replace("FAILED ", "")))
            missed += not caught
            print(f"| {name} | {what} | {rows[-1][2]} | {rows[-1][3]} |", flush=True)
    return 1 if missed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.feed_mutants")
    ap.add_argument("names", nargs="*", help=f"mutants to run (default: all of {sorted(MUTANTS)})")
    args = ap.parse_args(argv)
    print("| mutant | what it breaks | result | first failing test |\n|---|---|---|---|")
    return run(args.names or list(MUTANTS))


if __name__ == "__main__":
    raise SystemExit(main())
