# The two commands: `make run` and `make test`. Both set up everything they need from
# nothing: the virtual environment, the Python packages and the Consul binary; `make test`
# also the Docker engine and the tools the Docker tests use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CONSUL := .tools/bin/consul
DOCKER := .tools/docker.checked

.PHONY: setup run test bench bench-failover bench-reconcile bench-engine clean

setup: $(VENV)/.installed $(CONSUL) $(DOCKER)
	@scripts/install-chromium.sh  # Debian's chromium, for the status page tests (as root)

# pip install -e . gives the commands genisys, genisys-connector-process and
# genisys-connector-docker in $(VENV)/bin.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV) || { echo "make: cannot create a virtual environment; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(CONSUL):
	scripts/install-consul.sh

# Debian's docker.io, docker-compose, busybox-static and debootstrap (as root).
$(DOCKER): scripts/install-docker.sh
	scripts/install-docker.sh $@

# Running Genisys needs no Docker engine: only the tests install one.
run: $(VENV)/.installed $(CONSUL)
	$(PY) scripts/run_dev.py

test: setup
	$(PY) -m pytest

# Benchmarks print figures; they assert nothing. wrk is used when it is installed.
bench: setup
	@command -v wrk >/dev/null || echo "bench: wrk not found (apt-get install wrk); using the asyncio load generator"
	$(PY) -m bench.api

bench-failover: setup
	$(PY) -m bench.failover

bench-reconcile: setup
	$(PY) -m bench.reconcile

# Issue 9's table: about 15 minutes with 100,000 services (--quick: about a minute).
bench-engine: setup
	$(PY) -m bench.engine

clean:
	rm -rf $(VENV) .tools .pytest_cache .hypothesis
