# `make run` and `make test` work on a fresh Debian machine: they install what is missing.
# Python packages go into a virtual environment of the project's own (.venv): Debian's
# python3 refuses `pip install` outside one (PEP 668). PYTHON makes it (any 3.11+).
PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON = $(VENV)/bin/python
DATA_DIR ?= .hsmkms
export HSMKMS_DATA_DIR ?= $(DATA_DIR)

.PHONY: run-deps test-deps console-deps install run test test-nss test-console screenshots lint bench

# What `make run` needs: softhsm2 (the token) and openssl. `make test` adds libnss3 (softokn),
# libnss3-tools (certutil) and p11-kit: the second PKCS#11 implementation `make test-nss`
# runs against; postgresql: the tests start a throwaway server from its binaries
# (tests/support/pg.py).
RUN_PACKAGES = softhsm2 openssl
TEST_PACKAGES = $(RUN_PACKAGES) libnss3 libnss3-tools p11-kit postgresql

# apt-get install the Debian packages named in $(1) that are not installed yet.
define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "hsmkms: installing $$missing"; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
endef

run-deps:
	$(call apt_install,$(RUN_PACKAGES))

test-deps:
	$(call apt_install,$(TEST_PACKAGES))

# The console's browser tests drive Debian's chromium (through Playwright's Python API,
# pointed at /usr/bin/chromium: no browser download); chromium-driver serves Selenium users.
console-deps:
	$(call apt_install,chromium chromium-driver)

# The environment; Debian's python3 makes one only with python3-venv (ensurepip).
$(VENV_PYTHON):
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	  $(MAKE) --no-print-directory venv-package && $(PYTHON) -m venv $(VENV); }

.PHONY: venv-package
venv-package:
	$(call apt_install,python3-venv)

# The runtime only (`make run`), or with the development tools (`make test`, `lint`, `bench`).
$(VENV)/.runtime: pyproject.toml | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install -q --disable-pip-version-check -e .
	@touch $@

$(VENV)/.dev: pyproject.toml | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $@ $(VENV)/.runtime

install: test-deps $(VENV)/.dev

HOST ?= 127.0.0.1
PORT ?= 8080
export HOST PORT

run: run-deps $(VENV)/.runtime
	$(VENV_PYTHON) -m hsmkms.cli init --keep-so-pin
	$(VENV_PYTHON) scripts/dev_principal.py
	$(VENV_PYTHON) -m hsmkms.cli serve --host $(HOST) --port $(PORT)

# The suite runs on TEST_WORKERS pytest-xdist workers, each with its own throwaway token,
# data dirs and PostgreSQL server (tests/conftest.py); `--dist loadgroup` keeps each
# xdist_group on one worker. Many tests wait on servers and subprocesses, so more workers
# than cores is faster (docs/testing.md has the measurements). TEST_WORKERS=0 runs serially;
# TEST_ARGS adds pytest options, e.g. `make test TEST_ARGS="-x tests/operations/test_crypto.py"`.
TEST_WORKERS ?= 3
# The suite starts hundreds of Python processes (the CLI, servers); where the environment
# sets PYTHONDONTWRITEBYTECODE each would compile hsmkms's sources again (~0.1 s of CPU).
PYTEST = env -u PYTHONDONTWRITEBYTECODE $(VENV_PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

test: install
	$(PYTEST) $(TEST_ARGS)

# The console in headless Chromium (tests/console, marker `console`, deselected by
# `make test`); `make screenshots` runs them saving each page under docs/screenshots/.
test-console: install console-deps
	$(PYTEST) -m console tests/console $(TEST_ARGS)

screenshots: install console-deps
	HSMKMS_TEST_SCREENSHOTS=docs/screenshots $(PYTEST) -m console tests/console $(TEST_ARGS)

# The same suite against NSS softokn; tests needing what it lacks skip with the reason.
test-nss: install
	HSMKMS_TEST_TOKEN=nss $(PYTEST) -rsfE $(TEST_ARGS)

lint: install
	$(VENV_PYTHON) -m ruff check hsmkms tests scripts
	$(VENV_PYTHON) -m ruff format --check hsmkms tests scripts
	$(VENV_PYTHON) -m mypy

bench: install
	$(VENV_PYTHON) scripts/bench.py
