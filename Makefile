# `make demo` and `make test` each do all their own set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
# The browser tests (tests/web) drive Debian's chromium; Playwright never downloads its own.
CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint bench clean venv

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
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m mypy

bench: $(VENV)/.installed
	$(PY) bench/step_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info undying.db*
