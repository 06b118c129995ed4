# `make run` and `make test` work on a fresh Debian machine: they install what is missing.
PYTHON ?= python3
DATA_DIR ?= .hsmkms
export HSMKMS_DATA_DIR ?= $(DATA_DIR)

.PHONY: deps console-deps install run test test-nss test-console lint bench

# softhsm2: the default token. libnss3 (softokn), libnss3-tools (certutil) and p11-kit:
# the second PKCS#11 implementation that `make test-nss` runs against. postgresql: the
# tests start a throwaway server from its binaries (tests/support/pg.py).
DEB_PACKAGES = softhsm2 libnss3 libnss3-tools p11-kit postgresql openssl

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

# The console's browser tests drive Debian's chromium (through Playwright's Python API,
# pointed at /usr/bin/chromium: no browser download); chromium-driver serves Selenium users.
CONSOLE_DEB_PACKAGES = chromium chromium-driver

console-deps:
	@missing=$$(for p in $(CONSOLE_DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

install: deps
	@$(PYTHON) -c "import hsmkms, pytest, xdist, uvicorn, aws_encryption_sdk, moto, psycopg, psycopg_pool, Crypto, jinja2, playwright" 2>/dev/null || \
	  $(PYTHON) -m pip install -q -e ".[dev]"

HOST ?= 127.0.0.1
PORT ?= 8080
export HOST PORT

run: install
	$(PYTHON) -m hsmkms.cli init --keep-so-pin
	$(PYTHON) scripts/dev_principal.py
	$(PYTHON) -m hsmkms.cli serve --host $(HOST) --port $(PORT)

# The suite runs on TEST_WORKERS pytest-xdist workers, each with its own throwaway token,
# data dirs and PostgreSQL server (tests/conftest.py); `--dist loadgroup` keeps each
# xdist_group on one worker. Many tests wait on servers and subprocesses, so more workers
# than cores is faster (docs/testing.md has the measurements). TEST_WORKERS=0 runs serially;
# TEST_ARGS adds pytest options, e.g. `make test TEST_ARGS="-x tests/operations/test_crypto.py"`.
TEST_WORKERS ?= 3
PYTEST = $(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

test: install
	$(PYTEST) $(TEST_ARGS)

# The console in headless Chromium (tests/console, marker `console`, deselected by
# `make test`); screenshots land in docs/screenshots/.
test-console: install console-deps
	$(PYTEST) -m console tests/console $(TEST_ARGS)

# The same suite against NSS softokn; tests needing what it lacks skip with the reason.
test-nss: install
	HSMKMS_TEST_TOKEN=nss $(PYTEST) -rs $(TEST_ARGS)

lint: install
	$(PYTHON) -m ruff check hsmkms tests scripts
	$(PYTHON) -m ruff format --check hsmkms tests scripts
	$(PYTHON) -m mypy

bench: install
	$(PYTHON) scripts/bench.py
