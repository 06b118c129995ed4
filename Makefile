# `make run` and `make test` work on a fresh Debian machine: they install what is missing.
PYTHON ?= python3
DATA_DIR ?= .hsmkms
export HSMKMS_DATA_DIR ?= $(DATA_DIR)

.PHONY: deps install run test lint bench

# PostgreSQL's server binaries are needed by the tests (tests/pg.py starts a throwaway one).
APT_PACKAGES = $(if $(shell command -v softhsm2-util),,softhsm2) \
  $(if $(wildcard /usr/lib/postgresql/*/bin/initdb),,postgresql)

deps:
	@if [ -n "$(strip $(APT_PACKAGES))" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); fi; fi

install: deps
	@$(PYTHON) -c "import hsmkms, pytest, uvicorn, aws_encryption_sdk, moto, psycopg, psycopg_pool" 2>/dev/null || \
	  $(PYTHON) -m pip install -q -e ".[dev]"

HOST ?= 127.0.0.1
PORT ?= 8080
export HOST PORT

run: install
	$(PYTHON) -m hsmkms.cli init
	$(PYTHON) scripts/dev_principal.py
	$(PYTHON) -m hsmkms.cli serve --host $(HOST) --port $(PORT)

test: install
	$(PYTHON) -m pytest -q

lint: install
	$(PYTHON) -m ruff check hsmkms tests scripts
	$(PYTHON) -m ruff format --check hsmkms tests scripts
	$(PYTHON) -m mypy

bench: install
	$(PYTHON) scripts/bench.py
