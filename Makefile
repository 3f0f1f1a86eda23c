# Two entry points: `make run` (set up + main job) and `make test` (set up + tests).
# The venv is built with the first Python >= 3.12 that tools/find_python.sh finds.
# `make run` installs the runtime dependencies only; `make test` (and `make setup`) add the
# test extras (pytest, ray, hftbacktest, notebook runners, ...).
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test setup bench clean catalog soak

$(PY):
	@PYBIN="$$(bash tools/find_python.sh)" && echo "using $$PYBIN" && "$$PYBIN" -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	@touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(TEST_STAMP) $(RUN_STAMP)

setup: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/mmbot backtest run

# Two pytest-xdist workers (installed with the test extras), one per core: about half the wall
# time of one process. --dist loadfile keeps a file's tests (and its module fixtures: generated
# catalogs, wf runs) on one worker. Each test process has its own fake API key
# (tools.fake_bybit.process_api_key), so the one-instance-per-key lock never joins two workers; the
# stop-window gap that made live tests flaky under this load is fixed (docs/runbook.md "Stop").
test: $(TEST_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(TEST_STAMP)
	$(PY) -m tools.bench

catalog: $(RUN_STAMP)
	$(PY) -m tools.build_catalog

# One hour of mmbot live against the loopback exchange at real-time rate with the default fault
# schedule; report and gates in runs/soak/<time>-live/ (docs/runbook.md, "Soak"). Exit 0 = every gate held.
soak: $(TEST_STAMP)
	$(PY) -m tools.soak --duration 1h

clean:
	rm -rf $(VENV) runs .pytest_cache
