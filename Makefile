# One command to run the app locally, one to test it. Needs Python 3.11+ and Node 18+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SETTINGS ?= local.settings.json
CONFIG ?= config/connections.sample.json
PORT ?= 7071
# Azurite's blob port; queue and table take the next two (or give all three: 20000,20001,20002).
AZURITE_PORTS ?= 10000

.PHONY: help install run validate test demo lint bench clean chromium
# `make` alone lists the targets instead of building anything.
.DEFAULT_GOAL := help

## help: list these targets, one line each
help:
	@echo "make TARGET [SETTINGS=$(SETTINGS)] [CONFIG=$(CONFIG)] [PORT=$(PORT)] [AZURITE_PORTS=$(AZURITE_PORTS)]"
	@sed -n 's/^## \([a-z-]*\): \(.*\)/\1|\2/p' $(firstword $(MAKEFILE_LIST)) | awk -F'|' '{ printf "  %-9s %s\n", $$1, $$2 }'

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

## install: make .venv (Python packages) and node_modules (Azurite)
install: $(VENV)/.installed node_modules/.installed

local.settings.json:
	cp local.settings.example.json $@
	$(PYTHON) -c "import base64, os, pathlib; p = pathlib.Path('$@'); p.write_text(p.read_text().replace('replace-with-openssl-rand-base64-32', base64.b64encode(os.urandom(32)).decode()))"
	@echo "Created $@ from local.settings.example.json, with a new data protection key: edit it to point at your own endpoints."

# Only local.settings.json is made from the example; another SETTINGS file must exist.
ifneq ($(SETTINGS),local.settings.json)
$(SETTINGS):
	@echo "settings file $(SETTINGS) not found; copy local.settings.example.json to $(SETTINGS) and edit it," >&2
	@echo "or leave SETTINGS out to use local.settings.json (made from the example on the first run)" >&2
	@exit 2
endif

## run: start Azurite and the app on http://127.0.0.1:PORT/api/ with SETTINGS and CONFIG
run: $(SETTINGS) install
	$(BIN)/python -m devhost --settings $(SETTINGS) --config $(CONFIG) --port $(PORT) --azurite-ports $(AZURITE_PORTS)

## validate: check the configuration file CONFIG as the app loads it (every problem with its path)
validate: $(VENV)/.installed
	$(BIN)/python -m shared.cli validate $(CONFIG)

## test: lint, type-check, then every test (starts its own Azurite on free ports)
test: install chromium
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

## demo: three flows played and narrated against local stand-ins, then kept running (DEMO_SHORT=1: stop)
demo: install
	$(BIN)/python -m devhost.demo $(if $(filter-out 0,$(DEMO_SHORT)),--short)

## lint: ruff only
lint: install
	$(BIN)/ruff check .

## bench: run every benchmark, then print one table of each figure beside its goal
bench: install
	$(BIN)/python bench/run_all.py

## clean: remove .venv, node_modules, Azurite's data (.azurite) and the tools' caches
clean:
	rm -rf $(VENV) node_modules .azurite .pytest_cache .ruff_cache .mypy_cache

## chromium: Debian's Chromium for the console's browser tests (tests/browser/), installed when missing.
## Playwright comes pinned from requirements-dev.txt; `playwright install` is never run (it downloads a browser).
CHROMIUM_PATH ?= /usr/bin/chromium
export CHROMIUM_PATH
chromium:
	@if [ -x "$(CHROMIUM_PATH)" ]; then exit 0; fi; \
	echo "Chromium is missing at $(CHROMIUM_PATH): installing Debian's chromium package for the browser tests"; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }; \
	elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "Cannot install chromium here (needs apt-get, as root or through sudo). Install it yourself or set" \
		     "CHROMIUM_PATH to a Chromium; until then the browser tests skip (and fail when CI is set)." >&2; \
		if [ -n "$$CI" ]; then exit 1; fi; \
	fi
