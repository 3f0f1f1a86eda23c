"""Mutation check of the Arrow import engine against the equality oracle.

``python -m tools.mutants_import [--only NAME]`` runs tests/test_import_equality.py's Arrow-engine
test against deliberately broken copies of adapters/bybit_book_arrow.py or mmbot/catalog_store.py
(source patched in memory in a child process, as tools/mutants_data.py does; no file changes).
Every mutant must be caught; the unmutated baseline must pass. Results: docs/data.md
("Import engines").
"""

from __future__ import annotations

import argparse
import sys

from tools.mutants_data import Mutant, run_one

TESTS = ("tests/test_import_equality.py", "-k", "arrow")
FAST = ("tests/test_import_fastpath.py",)
A = "adapters.bybit_book_arrow"
C = "mmbot.catalog_store"
MUTANTS = (
    Mutant("side flipped in delta messages", A, "        side_col[lvl_pos] = side\n",
           "        side_col[lvl_pos] = np.where(snap[lvl_msg], side, 3 - side)\n", TESTS),
    Mutant("one level per chunk one tick off", A, "            price[lvl_pos] = _raw_bytes(px, self.pp)",
           "            price[lvl_pos] = _raw_bytes(px + (np.arange(len(px)) == len(px) // 2), self.pp)", TESTS),
    Mutant("F_LAST dropped on a chunk's first message", A, "        flags[row0[1:][has_rows] - 1] |= F_LAST",
           "        flags[row0[1:][has_rows][1:] - 1] |= F_LAST", TESTS),
    Mutant("sequence off by one", A, "            pa.array(u_a[msg_of_row], pa.uint64()),",
           "            pa.array(u_a[msg_of_row] + np.uint64(1), pa.uint64()),", TESTS),
    Mutant("row dropped at a chunk boundary", A, "        return Chunk(table if n else None, n_rows_msg[has_rows], n_msg, nbytes)",
           "        return Chunk(table.slice(0, n - 1) if n else None, n_rows_msg[has_rows], n_msg, nbytes)", TESTS),
    Mutant("row dropped at a file cut", C, "                self._append(key, table.slice(int(offs[pos]), int(offs[j] - offs[pos])),",
           "                self._append(key, table.slice(int(offs[pos]), int(offs[j] - offs[pos]) - (j < nb)),", TESTS),
    Mutant("file cut one message late", C, "            j = min(max(int(np.searchsorted(offs, offs[pos] + need, \"left\")), pos), nb)",
           "            j = min(max(int(np.searchsorted(offs, offs[pos] + need, \"left\")) + 1, pos), nb)", TESTS),
    Mutant("ts_init not pushed past the previous row", A,
           "        c = np.maximum.accumulate(np.maximum(ts_ns - row0[:-1], self.last_ts_init + 1))",
           "        c = ts_ns - row0[:-1]", TESTS),
    Mutant("crossed book not checked", A, "        if len(crossed):", "        if False:", TESTS),
    Mutant("update-id gap not checked", A, "        if ((prev_u[delta] == _U64_MAX) | (u_a[delta] != prev_u[delta] + np.uint64(1))).any():",
           "        if False:", TESTS),
    Mutant("ts going backwards not checked", A, "        if (ts_ms_a < prev_ts).any():", "        if False:", TESTS),
    Mutant("other day not checked", A, "        if ts_ns.min() < self.day_lo_ns or ts_ns.max() >= self.day_hi_ns:",
           "        if False:", TESTS),
    Mutant("other symbol not checked", A, "        if symbols != {self.symbol}:", "        if False:", TESTS),
    Mutant("delta before the first snapshot accepted", A, "        if self.last_u is None and not snap[0]:",
           "        if False:", TESTS),
    Mutant("zero price accepted", A, "            if (px == 0).any():", "            if False:", TESTS),
    Mutant("non-decimal strings accepted", A, '_DECIMAL = r"^[0-9]+(\\.[0-9]{0,16})?$"', '_DECIMAL = r".*"', TESTS),
    Mutant("more than 16 decimals accepted", A, '_DECIMAL = r"^[0-9]+(\\.[0-9]{0,16})?$"',
           '_DECIMAL = r"^[0-9]+(\\.[0-9]*)?$"', ("tests/test_hostile_review24.py", "-k", "16_decimals")),
    Mutant("lines not checked to hold one value each", A, 'chunk.count(b"}\\n{") == len(lines) - 1', "True", TESTS),
    Mutant("unchanged_size not counted", A, "        self.unchanged_size += int((checked & (z == prev)).sum())",
           "        pass", TESTS),
    Mutant("carried book ignored by the invariant", A, "        prev[~same] = 0\n",
           "        prev[~same | np.concatenate(([True], mm[:-1] < 0))] = 0\n", TESTS),
    # the fast path (raw level text, vectorised book): tests/test_import_fastpath.py
    Mutant("fast path: a '.' first accepted", A, "    if (dot_at == lead).any():", "    if False:", FAST),
    Mutant("fast path: two '.' accepted", A, "        if (dots & low).any():", "        if False:", FAST),
    Mutant("fast path: bytes other than digits accepted", A, "        if not (((v & _HIGH_NIBBLES)",
           "        if False and (((v & _HIGH_NIBBLES)", FAST),
    Mutant("fast path: more decimals than the precision accepted", A, "    if int(decimals.max()) > precision:",
           "    if False:", FAST),
    Mutant("fast path: 2**63 ticks overflow not refused", A,
           "    if int(digits.max()) > _I64_MAX // 10**precision and (digits > _I64_MAX // _POW10[precision - decimals]).any():",
           "    if False:", FAST),
    Mutant("fast path: level skeleton not checked", A, "    if not ((buf[q0 - 1] == _OPEN).all() and",
           "    if False and ((buf[q0 - 1] == _OPEN).all() and", FAST),
    Mutant("fast path: list ends not checked", A, "    if not ((q0[first[nonempty]] == start[nonempty] + 2).all()",
           "    if False and ((q0[first[nonempty]] == start[nonempty] + 2).all()", FAST),
    Mutant("fast path: separators between levels not checked", A, "    if not ((q0[inner + 1] == q3[inner] + 4).all()",
           "    if False and ((q0[inner + 1] == q3[inner] + 4).all()", FAST),
    Mutant("book pass: a level's span runs past its next row", A,
           "        stop[:-1] = np.where(same[1:], mm[1:], stop[:-1])", "        pass", FAST),
    Mutant("book pass: an overwritten row of a message stays live", A, "        live = (z > 0) & (stop > begin)",
           "        live = z > 0", FAST),
    Mutant("sparse table: upper halves not pushed down", A,
           "        np.maximum(table[j - 1, half:], table[j, :n - half], out=table[j - 1, half:])", "        pass", FAST),
    Mutant("chunk text: a last line without newline dropped", A, "            yield buf, newlines + 1, at\n",
           "            pass\n", FAST),
    Mutant("chunk text: newline offsets not shifted to the chunk", A,
           "                yield buf[begin:cut], per, at[j * per:(j + 1) * per - 1] - begin",
           "                yield buf[begin:cut], per, at[j * per:(j + 1) * per - 1]", FAST),
    Mutant("fast path: line boundaries not checked at the newline offsets", A,
           "(buf[newlines - 1] == _CLOSE_BRACE).all()\n                and (buf[newlines + 1] == _OPEN_BRACE).all()",
           "True", FAST),
    Mutant("fast path: same-decimals batch keeps the '.' digit", A,
           "        digits = a - 9 * _POW10[decimals] * (a // _POW10[decimals + 1])", "        digits = a", FAST),
    Mutant("fast path: a mixed batch read with the first string's decimals", A,
           "    same_decimals = first_dot == last_dot", "    same_decimals = True", FAST),
    Mutant("raw bytes: carry of the low limb dropped", A, " + (lo < low)", "", FAST),
    Mutant("staged files not seen by the disjointness check", C,
           "            intervals = sorted(i for i in map(", "            intervals = [] and sorted(i for i in map(", FAST),
    Mutant("fallback keeps what the file wrote", C, "        writer.rollback(cp)\n", "        pass\n", TESTS),
    Mutant("json_int: true read as 1", "adapters.bybit_book", "    if isinstance(value, bool) or (", "    if False or (", ("tests/test_hostile_review24.py", "-k", "not_an_integer")),
    Mutant("json_int: fractions truncated", "adapters.bybit_book", "(isinstance(value, float) and not value.is_integer())",
           "False", ("tests/test_hostile_review24.py", "-k", "not_an_integer")),
    Mutant("json_int: any int() string", "adapters.bybit_book", "not (value.isdigit() and value.isascii())", "False", ("tests/test_hostile_review24.py", "-k", "not_an_integer")),
    Mutant("encrypted / deflate64 zip member: traceback", "adapters.sources",
           "zlib.error, EOFError, RuntimeError) as e:", "zlib.error, EOFError) as e:", ("tests/test_hostile_review24.py", "-k", "zipfile_cannot")),
    Mutant("damaged LZMA zip member: traceback", "adapters.sources", "zipfile.BadZipFile, lzma.LZMAError) as e:",
           "zipfile.BadZipFile) as e:", ("tests/test_hostile_review24.py", "-k", "zipfile_cannot")),
    Mutant("a corrupt parquet file ends catalog ls in a traceback", C,
           "                except (OSError, pa.ArrowException) as e:", "                except ZeroDivisionError as e:",
           ("tests/test_hostile_review24.py", "-k", "corrupt")),
    Mutant("a dead --jobs worker ends the import", C, "    except BrokenProcessPool:", "    except ZeroDivisionError:",
           ("tests/test_hostile_review24.py", "-k", "killed")),
    Mutant("other scripts' digits accepted in a decimal", "adapters.bybit_book",
           "len(frac) > _RAW_DIGITS or not text.isascii():", "len(frac) > _RAW_DIGITS or not whole.isascii():",
           ("tests/test_hostile_review24.py", "-k", "non_ascii")),
    Mutant("other scripts' digits accepted in a funding time", "adapters.bybit_funding",
           "value.strip().isdigit() and value.isascii():", "value.strip().isdigit():",
           ("tests/test_hostile_review24.py", "-k", "funding_timestamp")),
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.mutants_import")
    ap.add_argument("--only", default=None, help="run the mutants whose name contains this text")
    args = ap.parse_args(argv)
    print("| module: mutant | verdict | first failing test |\n|---|---|---|")
    missed = 0
    for m in (None, *MUTANTS):
        if m is not None and args.only and args.only not in m.name:
            continue
        if m is None:
            import subprocess

            res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header", *TESTS],
                                 capture_output=True, text=True)
            print(f"| baseline (no mutant) | {'pass' if res.returncode == 0 else 'FAIL'} | - |", flush=True)
            missed += res.returncode != 0
            continue
        rc, _dt, failed = run_one(m)
        verdict = "caught" if rc == 1 else ("ERROR (mutant not applied)" if rc == 3 else ("MISSED" if rc == 0 else f"rc {rc}"))
        missed += verdict != "caught"
        print(f"| {m.module}: {m.name} | {verdict} | `{failed}` |", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
