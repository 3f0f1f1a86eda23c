# Two entry points: `make run` (set up + main job) and `make test` (set up + tests).
# The venv is built with the first Python >= 3.12 that tools/find_python.sh finds.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test setup bench clean catalog

$(STAMP): pyproject.toml
	@PYBIN="$$(bash tools/find_python.sh)" && echo "using $$PYBIN" && "$$PYBIN" -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/mmbot backtest run

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m tools.bench

catalog: $(STAMP)
	$(PY) -m tools.build_catalog

clean:
	rm -rf $(VENV) runs .pytest_cache
