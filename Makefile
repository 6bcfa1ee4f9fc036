# One command to run the app locally, one to test it. Needs Python 3.11+ and Node 18+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SETTINGS ?= local.settings.json
CONFIG ?= config/connections.sample.json
PORT ?= 7071

.PHONY: install run test lint bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python requirements.txt requirements-dev.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed node_modules/.installed

local.settings.json:
	cp local.settings.example.json $@
	$(PYTHON) -c "import base64, os, pathlib; p = pathlib.Path('$@'); p.write_text(p.read_text().replace('replace-with-openssl-rand-base64-32', base64.b64encode(os.urandom(32)).decode()))"
	@echo "Created $@ from local.settings.example.json, with a new data protection key: edit it to point at your own endpoints."

## run: start Azurite and the local host on http://127.0.0.1:$(PORT)/api/
run: install $(SETTINGS)
	$(BIN)/python -m devhost --settings $(SETTINGS) --config $(CONFIG) --port $(PORT) --azurite

## test: lint, type-check, then every test (starts its own Azurite on free ports)
test: install chromium
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

## bench: run every benchmark, then print one table of each figure beside its goal
bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) node_modules .azurite .pytest_cache .ruff_cache .mypy_cache

## chromium: Debian's Chromium for the console's browser tests (tests/browser/), installed when missing.
## Playwright comes pinned from requirements-dev.txt; `playwright install` is never run (it downloads a browser).
CHROMIUM_PATH ?= /usr/bin/chromium
export CHROMIUM_PATH
.PHONY: chromium
chromium:
	@if [ -x "$(CHROMIUM_PATH)" ]; then exit 0; fi; \
	echo "Chromium is missing at $(CHROMIUM_PATH): installing Debian's chromium package for the browser tests"; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq chromium; \
	elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
		sudo apt-get update -qq && sudo apt-get install -y -qq chromium; \
	else \
		echo "Cannot install chromium here (needs apt-get, as root or through sudo). Install it yourself or set" \
		     "CHROMIUM_PATH to a Chromium; until then the browser tests skip (and fail when CI is set)." >&2; \
		if [ -n "$$CI" ]; then exit 1; fi; \
	fi
