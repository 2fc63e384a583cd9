# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
INSYNC := .venv-insync
IBAPI := .venv-ibapi
IBAPI10 := .venv-ibapi10
BIN := $(VENV)/bin
RUN_KEY ?= demo-$(shell date -u +%Y-%m-%d)
KIT_DB ?= data/kit.duckdb
export KIT_DB

.PHONY: demo demo-ib test crash-soak lint bench clean insync ibapi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# ib_insync and ib_async both install a top-level `eventkit`, so ib_insync lives in its own environment,
# with kit installed there without its ib_async dependency.
$(INSYNC)/.installed: pyproject.toml
	test -x $(INSYNC)/bin/python || $(PYTHON) -m venv $(INSYNC)
	$(INSYNC)/bin/python -m pip install --quiet --upgrade pip
	$(INSYNC)/bin/python -m pip install --quiet ib_insync==0.9.86 pandas==3.1.1 duckdb==2.0.0 \
		croniter==7.0.0 pydantic==2.14.3 pytest==9.2.0 hypothesis==6.170.15
	$(INSYNC)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

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

test: $(VENV)/.installed $(INSYNC)/.installed $(IBAPI)/.installed $(IBAPI10)/.installed
	$(BIN)/ruff check .
	KIT_DB=$$(mktemp -d)/kit.duckdb $(BIN)/pytest -q tests
	KIT_DB=$$(mktemp -d)/kit.duckdb $(BIN)/pytest -q --nbval-lax notebooks

# A real browser: JupyterLab runs notebooks/momentum.ipynb in headless Chromium driven by Playwright, and the
# review's HTML export is drawn with the network cut off. Needs Debian's chromium (/usr/bin/chromium, or
# KITTEST_CHROMIUM; .ci/run installs it) and Playwright, which this target installs: never its browser download.
PLAYWRIGHT ?= playwright==1.65.2
.PHONY: test-browser
$(VENV)/.playwright: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet $(PLAYWRIGHT)
	touch $@

test-browser: $(VENV)/.playwright
	KITTEST_BROWSER_TESTS=1 KIT_DB=$$(mktemp -d)/kit.duckdb $(BIN)/pytest -q tests/browser

# The long randomized crash matrix (random kill points, fill models and seeds); not part of make test.
CRASH_ROUNDS ?= 40
crash-soak: $(VENV)/.installed
	KITTEST_CRASH_SOAK=$(CRASH_ROUNDS) $(BIN)/pytest -q tests/test_crash_matrix.py -k soak

lint: $(VENV)/.installed
	$(BIN)/ruff check .

bench: $(VENV)/.installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(INSYNC) $(IBAPI) $(IBAPI10) .pytest_cache .ruff_cache .hypothesis
