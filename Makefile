# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv from pyproject.toml,
# pinned by constraints.txt.
PYTHON ?= python3
VENV := .venv
INSYNC := .venv-insync
IBAPI := .venv-ibapi
IBAPI10 := .venv-ibapi10
EXTRAS := ib,lab,review,test
INSYNC_EXTRAS := insync,test
BIN := $(VENV)/bin
RUN_KEY ?= demo-$(shell date -u +%Y-%m-%d)
KIT_DB ?= data/kit.duckdb
export KIT_DB

.PHONY: demo demo-ib test test-lowest crash-soak lint bench clean insync ibapi constraints

# Both environments install from constraints.txt, the exact set `make test` passed with; pyproject.toml
# holds only compatible ranges.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]" -c constraints.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# ib_insync and ib_async both install a top-level `eventkit`, so ib_insync lives in its own environment:
# kit with the insync extra instead of ib, same constraints.
$(INSYNC)/.installed: pyproject.toml constraints.txt
	test -x $(INSYNC)/bin/python || $(PYTHON) -m venv $(INSYNC)
	$(INSYNC)/bin/python -m pip install --quiet --upgrade pip
	$(INSYNC)/bin/python -m pip install --quiet -e ".[$(INSYNC_EXTRAS)]" -c constraints.txt
	touch $@

# Re-resolve the newest versions pyproject.toml allows into constraints.txt, in scratch environments (the
# insync one held to the main one's versions, so the two agree); then `make test` before committing it.
LOCK := .venv-lock
constraints:
	rm -rf $(LOCK) $(LOCK)-insync
	$(PYTHON) -m venv $(LOCK)
	$(LOCK)/bin/python -m pip install --quiet ".[$(EXTRAS)]"
	$(LOCK)/bin/python -m pip freeze --exclude kit > $(LOCK)/frozen.txt
	$(PYTHON) -m venv $(LOCK)-insync
	$(LOCK)-insync/bin/python -m pip install --quiet ".[$(INSYNC_EXTRAS)]" -c $(LOCK)/frozen.txt
	$(LOCK)-insync/bin/python -m pip freeze --exclude kit > $(LOCK)-insync/frozen.txt
	(grep '^#' constraints.txt; sort -fu $(LOCK)/frozen.txt $(LOCK)-insync/frozen.txt) > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK) $(LOCK)-insync

# The suite on the lowest version of each direct dependency that pyproject.toml allows (not in make test).
LOWEST := .venv-lowest
test-lowest:
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet -e ".[ib,review,test]" -c constraints-lowest.txt
	$(LOWEST)/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	KIT_DB=$$(mktemp -d)/kit.duckdb $(LOWEST)/bin/pytest -q tests --ignore tests/test_wheel.py \
		--deselect tests/test_packaging.py::test_make_installed_exactly_the_constrained_set

insync: $(INSYNC)/.installed

# IB's own Python clients, for the gateway's conformance suite (tests/gateway/test_gateway_ibapi.py): the
# `ibapi` 9.81.1.post1 that IB published on PyPI (speaks v100..157), and a current 10.x build of IB's TWS API
# source republished by a third party as `ibapi-latest` (see docs/gateway.md). Both install a top-level
# `ibapi`, so each has its own environment; neither needs kit.
$(IBAPI)/.installed:
	test -x $(IBAPI)/bin/python || $(PYTHON) -m venv $(IBAPI)
	$(IBAPI)/bin/python -m pip install --quiet ibapi==9.81.1.post1
	touch $@

$(IBAPI10)/.installed:
	test -x $(IBAPI10)/bin/python || $(PYTHON) -m venv $(IBAPI10)
	$(IBAPI10)/bin/python -m pip install --quiet ibapi-latest==10.51.1
	touch $@

ibapi: $(IBAPI)/.installed $(IBAPI10)/.installed

demo: $(VENV)/.installed
	$(BIN)/kit run notebooks/momentum.ipynb --run-key $(RUN_KEY) -p broker mock
	$(BIN)/kit summary --run $(RUN_KEY)

# The same notebook on the IB path: kit's simulated gateway on a free loopback port, stopped afterwards.
# The simulated gateway quotes the prices the notebook decides on (kit/sample.py writes them for both).
DEMO_PRICES ?= data/demo-prices.csv
demo-ib: $(VENV)/.installed
	$(BIN)/python -m kit.sample $(DEMO_PRICES)
	$(BIN)/kit gateway --port 0 --log-level WARNING --prices $(DEMO_PRICES) -- \
		$(BIN)/kit run notebooks/momentum.ipynb --run-key $(RUN_KEY)-ib -p broker ib
	$(BIN)/kit summary --run $(RUN_KEY)-ib

test: $(VENV)/.installed $(INSYNC)/.installed $(IBAPI)/.installed $(IBAPI10)/.installed .venv-airflow/.installed
	$(BIN)/ruff check .
	KIT_DB=$$(mktemp -d)/kit.duckdb $(BIN)/pytest -q tests
	KIT_DB=$$(mktemp -d)/kit.duckdb $(BIN)/pytest -q --nbval-lax notebooks

# A real browser: JupyterLab runs notebooks/momentum.ipynb in headless Chromium driven by Playwright, and the
# review's HTML export is drawn with the network cut off. Needs Debian's chromium (/usr/bin/chromium, or
# KITTEST_CHROMIUM; .ci/run installs it) and Playwright (the test extra), never Playwright's browser download.
.PHONY: test-browser
test-browser: $(VENV)/.installed
	KITTEST_BROWSER_TESTS=1 KIT_DB=$$(mktemp -d)/kit.duckdb $(BIN)/pytest -q tests/browser

# The long randomized crash matrix (random kill points, fill models and seeds); not part of make test.
CRASH_ROUNDS ?= 40
crash-soak: $(VENV)/.installed
	KITTEST_CRASH_SOAK=$(CRASH_ROUNDS) $(BIN)/pytest -q tests/test_crash_matrix.py -k soak

lint: $(VENV)/.installed
	$(BIN)/ruff check .

bench: $(VENV)/.installed
	$(BIN)/python -m bench
	$(BIN)/python -m bench.many_writers  # 8 writers on one PostgreSQL ledger next to DuckDB (needs postgresql)

clean:
	rm -rf $(VENV) $(INSYNC) $(IBAPI) $(IBAPI10) $(LOCK) $(LOCK)-insync $(LOWEST) .pytest_cache .ruff_cache .hypothesis

# Airflow 3 runs kit's jobs (kit/airflow.py) in its own environment: its dependency set is large and pinned on
# its own (tests/airflow/constraints.txt, the tested set), and kit is installed there without JupyterLab and plotly.
AIRFLOW := .venv-airflow
.PHONY: airflow clean-airflow

$(AIRFLOW)/.installed: pyproject.toml tests/airflow/constraints.txt
	test -x $(AIRFLOW)/bin/python || $(PYTHON) -m venv $(AIRFLOW)
	echo "*" > $(AIRFLOW)/.gitignore
	$(AIRFLOW)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW)/bin/python -m pip install --quiet -c tests/airflow/constraints.txt apache-airflow==3.1.8 \
		ib_async==2.1.0 pandas==3.1.1 duckdb==2.0.0 papermill==2.7.0 ipykernel==7.4.0 croniter==7.0.0 \
		exchange_calendars==4.13.2 "psycopg[binary]==3.3.9"
	$(AIRFLOW)/bin/python -m pip install --quiet --no-deps -e .
	$(AIRFLOW)/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

airflow: $(AIRFLOW)/.installed

clean: clean-airflow
clean-airflow:
	rm -rf $(AIRFLOW)
