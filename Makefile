# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv when it is
# missing and reinstall only when pyproject.toml changed since the last install.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-later bench lint typecheck clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[dev]'
	@$(PY) infra/clock_shift.py >/dev/null
	@touch $(STAMP)

# azure-iot-device pins paho-mqtt<2, so the hub's device-SDK tests run it from its own venv.
.venv-azure-device/.installed: infra/clock_shift.py
	@test -x .venv-azure-device/bin/python || $(PYTHON) -m venv .venv-azure-device
	@.venv-azure-device/bin/python -m pip install --quiet 'azure-iot-device==2.14.0' 'time-machine>=2.14'
	@.venv-azure-device/bin/python infra/clock_shift.py >/dev/null
	@touch $@

# System tools the tests use, from Debian when missing: mosquitto (the hub benchmark's C
# baseline), PostgreSQL's binaries (the storage tests use the server on 127.0.0.1:5432 when it
# answers, else start a throwaway cluster with initdb/pg_ctl) and Chromium (the dashboard's
# browser tests drive it headless through playwright) and faketime (Azurite's clock under
# `make test-later`).
.venv-system.installed:
	@command -v mosquitto >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq mosquitto; }
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }
	@command -v faketime >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq faketime; }
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq postgresql; }
	@touch $@

# Azurite, the Azure Blob Storage emulator the blob store's contract tests run against (npm,
# installed under .tools/; Node.js from Debian when missing).
.tools/.azurite.installed:
	@command -v npm >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
	@npm install --silent --no-audit --no-fund --prefix .tools azurite@3.35.0
	@touch $@

setup: $(STAMP) .venv-azure-device/.installed .venv-system.installed .tools/.azurite.installed

demo: $(STAMP)
	$(VENV)/bin/tinyfleet demo

# Whole test files run on $(TEST_WORKERS) worker processes (pytest-xdist): most tests wait on
# child processes, sockets and databases, so three workers keep this machine's two cores busy.
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 3
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: setup
	$(PYTEST)

# The same suite with every process's wall clock a year and a month ahead (see infra/clock_shift.py).
test-later: setup
	TINYFLEET_TEST_CLOCK_SHIFT=400d $(PYTEST)

bench: setup
	TINYFLEET_BENCH_FULL=1 $(PY) -m pytest -q -s tests/bench

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
