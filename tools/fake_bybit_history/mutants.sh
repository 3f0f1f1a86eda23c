#!/usr/bin/env bash
# Mutation check of the validators and guards of `mmbot data fetch` and of the time parser
# (docs/fetch.md, "Mutants"). Each line breaks one check in the working tree, runs the tests that
# must notice, prints "caught" or "SURVIVED", and restores the file. Run from the repository root
# on a clean tree: bash tools/fake_bybit_history/mutants.sh   (about 1 minute)
set -u
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
T=tests/test_data_fetch.py
survived=0
run() {  # FILE OLD NEW PYTEST-ARGS...
  local file=$1 old=$2 new=$3; shift 3
  local backup; backup=$(mktemp)
  cp "$file" "$backup"
  trap 'cp "$backup" "$file"' INT TERM
  "$PY" - "$file" "$old" "$new" <<'PYCODE'
import sys
path, old, new = sys.argv[1:4]
text = open(path).read()
assert text.count(old) == 1, f"{path}: mutant anchor found {text.count(old)} times: {old!r}"
open(path, "w").write(text.replace(old, new))
PYCODE
  if "$PY" -m pytest -q -x -p no:cacheprovider "$@" >/dev/null 2>&1; then
    echo "SURVIVED  $file: $old  ->  $new"; survived=$((survived + 1))
  else
    echo "caught    $file: $old  ->  $new"
  fi
  cp "$backup" "$file"; rm -f "$backup"; trap - INT TERM
}
run mmbot/timeutil.py 'if s.isdigit() and len(s) == _NS_DIGITS:' 'if s.isdigit():' $T -k time_
run mmbot/timeutil.py 'if hh > 23 or mm > 59 or ss > 59:' 'if False:' $T -k time_
run mmbot/timeutil.py 'if hours > 23 or minutes > 59:' 'if False:' $T -k time_
run mmbot/timeutil.py 'if frac_ns % 10 ** len(frac):' 'if False:' $T -k time_
run mmbot/timeutil.py 'if not 0 <= ns <= _MAX_NS:' 'if False:' $T -k time_
run mmbot/timeutil.py '(?:[T ](?P<hh>' '(?:[T /](?P<hh>' $T -k time_
run mmbot/data/fetch.py 'if end_ns <= start_ns:' 'if end_ns < start_ns:' $T -k "day_range or bad_input"
run mmbot/data/fetch.py 'if end > today:' 'if False:' $T -k "day_range or bad_input"
run mmbot/data/fetch.py 'if unknown or not kinds:' 'if not kinds:' $T -k bad_input
run mmbot/data/fetch.py 'if not SYMBOL_RE.match(symbol):' 'if not symbol:' $T -k bad_input
run mmbot/data/fetch.py 'if url is not None and not re.match' 'if False and not re.match' $T -k "bad_input or base_urls"
run mmbot/cli/data.py 'if do_import and {"ob500", "ob200"} <= set(kind_list):' 'if False:' $T -k bad_input
run mmbot/data/fetch.py 'if not isinstance(row, dict) or row.get("symbol") != symbol:' 'if not isinstance(row, dict):' $T -k funding
run mmbot/data/fetch.py 'if not ts.isdigit() or not start_ms <= int(ts) <= end_ms:' 'if not ts.isdigit():' $T -k funding
run mmbot/data/fetch.py 'if len(page) < FUNDING_PAGE_LIMIT:' 'if True:' $T -k funding
run mmbot/data/fetch.py 'if r.status == 404:' 'if r.status == 0:' $T -k "missing or exit_codes"
run mmbot/data/fetch.py 'RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})' 'RETRY_STATUS = frozenset()' $T -k "500 or 503"
run mmbot/data/fetch.py 'if cr == f"bytes */{offset}":' 'if False:' $T -k too_large
run mmbot/data/fetch.py 'if item.dest.exists():  # renamed' 'if False:  # renamed' $T -k rerun
run mmbot/data/fetch.py 'return min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))' 'return self.backoff_base_s * 2 ** (attempt - 1)' $T -k backoff
run mmbot/data/fetch.py 'return "done"  # the .part is already whole' 'return "missing"  # the .part is already whole' $T -k too_large
# the guards below also have monkeypatched mutants inside the suite (test_mutant_guard_is_caught,
# test_mutant_unbounded_jobs_is_caught); these are the same checks broken at the source
run mmbot/data/fetch.py 'bad = zf.testzip()' 'bad = None' $T -k corrupt_byte
run mmbot/data/fetch.py 'while gz.read(CHUNK_BYTES * 16):' 'while False:' $T -k corrupt_gzip
run mmbot/data/fetch.py 'return content_range is not None and content_range[0] == offset' 'return content_range is not None' $T -k wrong_offset
run mmbot/data/fetch.py 'sem = asyncio.Semaphore(self.request.jobs)' 'sem = asyncio.Semaphore(1000)' $T -k "jobs_bounds"
echo "$survived mutant(s) survived"
exit $((survived > 0))
