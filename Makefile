# The two commands: `make run` and `make test`. Both set up everything they need
# (virtual environment, Python packages, the Consul binary) from nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CONSUL := .tools/bin/consul

.PHONY: setup run test bench clean

setup: $(VENV)/.installed $(CONSUL)

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV) || { echo "make: cannot create a virtual environment; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(CONSUL):
	scripts/install-consul.sh

run: setup
	$(PY) scripts/run_dev.py

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m bench.api

clean:
	rm -rf $(VENV) .tools .pytest_cache .hypothesis
