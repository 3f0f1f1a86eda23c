"""Builds the embedded default catalog in ``catalog/`` (deterministic: same seed, same bytes).

1. A seeded synthetic hour of BTCUSDT (``tools.gen_synthetic``) written as an mmbot recording
   and imported through the same loader users use.
2. The real Bybit XRPUSDT ob500 sample (``tests/fixtures``), imported as it is.

``python -m tools.build_catalog [--out DIR] [--check]``: ``--check`` rebuilds into a temporary
directory and fails if any file differs from ``catalog/`` (used by the tests).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from adapters.instruments import InstrumentRegistry
from mmbot.catalog_store import import_paths
from mmbot.paths import DEFAULT_CATALOG, REPO_ROOT
from tools.gen_synthetic import generate, parse_start, write_recording

SYMBOL = "BTCUSDT"
START = "2024-06-03T00:00:00Z"
MINUTES = 60.0
SEED = 7
DEPTH = 50
REAL_SAMPLE = REPO_ROOT / "tests" / "fixtures" / "2024-12-01_XRPUSDT_ob500.data"


def build(out: Path) -> Path:
    """Write the catalog into ``out`` (must not exist); returns it."""
    with tempfile.TemporaryDirectory(prefix="mmbot-catalog-") as tmp:
        rec = Path(tmp) / f"{SYMBOL}_{START[:10]}.jsonl.gz"
        write_recording(rec, generate(SYMBOL, parse_start(START), MINUTES, SEED, DEPTH))
        result = import_paths([rec, REAL_SAMPLE], out, InstrumentRegistry(), strict=True)
    for (kind, iid), w in sorted(result.written.items()):
        print(f"{kind:16} {iid:24} {w.rows:>9} rows", file=sys.stderr)
    return out


def files_of(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def check(committed: Path) -> list[str]:
    """Differences between ``committed`` and a fresh build (empty = identical)."""
    with tempfile.TemporaryDirectory(prefix="mmbot-catalog-check-") as tmp:
        fresh = build(Path(tmp) / "catalog")
        a, b = files_of(committed), files_of(fresh)
        diffs = [f"only in one of them: {p}" for p in sorted(set(a) ^ set(b))]
        diffs += [f"differs: {p}" for p in sorted(set(a) & set(b)) if not filecmp.cmp(committed / p, fresh / p, shallow=False)]
        return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.build_catalog")
    ap.add_argument("--out", type=Path, default=DEFAULT_CATALOG)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    if args.check:
        diffs = check(args.out)
        print("\n".join(diffs) or "catalog is identical to a fresh build")
        return 1 if diffs else 0
    if args.out.exists():
        shutil.rmtree(args.out)
    build(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
