# Two commands: `make serve` and `make test`. Both build .venv from pyproject.toml first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RAY_PORT ?= 6390

.PHONY: install serve test bench clean stop

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the local CPU build, not the multi-GB CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,research]'
	touch $(STAMP)

serve: $(STAMP)
	$(PY) -m serve_app serve --config cluster/serve_config.yaml --ray-port $(RAY_PORT)

# The Flower simulation tests run in a pytest session (and Ray cluster) of their own: Flower
# sizes its client actor pool from the cluster's total CPUs, and next to the session's serving
# apps on a 2-core machine its clients did not start within the round timeout.
FLOWER_TESTS := tests/e2e/test_training_fl_job.py tests/integration/test_training_fl.py

test: $(STAMP)
	$(PY) -m pytest -q $(addprefix --ignore=,$(FLOWER_TESTS))
	$(PY) -m pytest -q $(FLOWER_TESTS)

bench: $(STAMP)
	$(PY) -m benchmarks.serving

clean:
	rm -rf $(VENV) .aegis-cache
