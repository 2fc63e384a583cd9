# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv from pyproject.toml,
# pinned by constraints.txt.
PYTHON ?= python3
VENV := .venv
INSYNC := .venv-insync
EXTRAS := ib,lab,review,test
INSYNC_EXTRAS := insync,test
BIN := $(VENV)/bin
RUN_KEY ?= demo-$(shell date -u +%Y-%m-%d)
KIT_DB ?= data/kit.duckdb
export KIT_DB

.PHONY: demo demo-ib test test-lowest crash-soak lint bench clean insync constraints

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

demo: $(VENV)/.installed
	$(BIN)/kit run notebooks/momentum.ipynb --run-key $(RUN_KEY) -p broker mock
	$(BIN)/kit summary --run $(RUN_KEY)

# The same notebook on the IB path: kit's simulated gateway on a free loopback port, stopped afterwards.
demo-ib: $(VENV)/.installed
	$(BIN)/kit gateway --port 0 --log-level WARNING -- \
		$(BIN)/kit run notebooks/momentum.ipynb --run-key $(RUN_KEY)-ib -p broker ib
	$(BIN)/kit summary --run $(RUN_KEY)-ib

test: $(VENV)/.installed $(INSYNC)/.installed
	$(BIN)/ruff check .
	KIT_DB=$$(mktemp -d)/kit.duckdb $(BIN)/pytest -q tests
	KIT_DB=$$(mktemp -d)/kit.duckdb $(BIN)/pytest -q --nbval-lax notebooks

# The long randomized crash matrix (random kill points, fill models and seeds); not part of make test.
CRASH_ROUNDS ?= 40
crash-soak: $(VENV)/.installed
	KIT_CRASH_SOAK=$(CRASH_ROUNDS) $(BIN)/pytest -q tests/test_crash_matrix.py -k soak

lint: $(VENV)/.installed
	$(BIN)/ruff check .

bench: $(VENV)/.installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(INSYNC) $(LOCK) $(LOCK)-insync $(LOWEST) .pytest_cache .ruff_cache .hypothesis
