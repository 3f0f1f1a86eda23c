#!/usr/bin/env bash
# Prints the path of the first Python interpreter >= 3.12 it can find, or fails loudly.
# Order: $PYTHON, python3.13/python3.12 on PATH, pyenv installs, then python3.
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
for v in python3.12 python3.13; do command -v "$v" >/dev/null 2>&1 && candidates+=("$(command -v "$v")"); done
for root in "${PYENV_ROOT:-$HOME/.pyenv}" /root/.pyenv; do
  for p in "$root"/versions/3.12*/bin/python3 "$root"/versions/3.13*/bin/python3; do
    [ -x "$p" ] && candidates+=("$p")
  done
done
command -v python3 >/dev/null 2>&1 && candidates+=("$(command -v python3)")
for c in "${candidates[@]}"; do
  if ok "$c"; then echo "$c"; exit 0; fi
done
echo "error: no Python >= 3.12 found (tried: ${candidates[*]:-nothing}); install one or set PYTHON=/path/to/python3.12" >&2
exit 1
