PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench soak quality clean venv nats run-cluster soak-cluster

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Start the service on the shipped config.toml (watches this repository itself).
run: $(STAMP)
	$(BIN)/python -m compileall -q kloros_stream
	$(BIN)/kloros-stream run --config config.toml

## Run the whole test suite; JUnit results land where the test monitor watches.
test: $(STAMP)
	$(BIN)/ruff check kloros_stream tests benchmarks quality
	$(BIN)/pytest -q -p no:cacheprovider --junitxml=var/test-results/pytest.xml

lint: $(STAMP)
	$(BIN)/ruff check kloros_stream tests benchmarks quality
	$(BIN)/ruff format --check kloros_stream tests benchmarks quality

## Benchmarks: figures go to benchmarks/RESULTS.md (machine, command, medians).
bench: $(STAMP)
	$(BIN)/python -m compileall -q kloros_stream
	$(BIN)/python -m benchmarks

# the real service under random faults, then lost/duplicated/stale against the truth;
# SOAK_SECONDS (default 600) and SOAK_SEED configure it
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak

## Signal quality on real code: precision/recall per gap type against quality/labels.
## Local trees are included when their variable is set, e.g. KLOROS_TREE=/path/to/kloros.
quality: $(STAMP)
	$(BIN)/python -m quality -v $(QUALITY_ARGS)

## Distributed mode on one machine (docs/distributed.md): `make nats` in one terminal,
## `make run-cluster` in another (edge + core against that server).
nats: $(STAMP)
	$(BIN)/nats-server -js -a 127.0.0.1 -p 4222 -sd var/nats

run-cluster: $(STAMP)
	{ cat config.toml; printf '\n[cluster]\nrole = "both"\nnats_url = "nats://127.0.0.1:4222"\n'; } > .cluster-demo.toml
	$(BIN)/kloros-stream run --config .cluster-demo.toml

## The cluster end-to-end test at full size: 10,000 gaps over three edges and two cores.
soak-cluster: $(STAMP)
	KLOROS_CLUSTER_GAPS=10000 $(BIN)/pytest -q -s -p no:cacheprovider --timeout 1800 \
		tests/e2e/test_cluster.py -k exactly_once

clean:
	rm -rf $(VENV) var build *.egg-info
