# `make run` and `make test` work on a fresh Debian machine: they install what is missing.
PYTHON ?= python3
DATA_DIR ?= .hsmkms
export HSMKMS_DATA_DIR ?= $(DATA_DIR)

.PHONY: deps install run test lint bench

deps:
	@command -v softhsm2-util >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq softhsm2; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq softhsm2; fi; }

install: deps
	@$(PYTHON) -c "import hsmkms, pytest, uvicorn, aws_encryption_sdk, moto, Crypto" 2>/dev/null || \
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
