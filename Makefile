PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench quality clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Start the service on the shipped config.toml (watches this repository itself).
run: $(STAMP)
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
	$(BIN)/python -m benchmarks

## Signal quality on real code: precision/recall per gap type against quality/labels.
## Local trees are included when their variable is set, e.g. KLOROS_TREE=/path/to/kloros.
quality: $(STAMP)
	$(BIN)/python -m quality -v $(QUALITY_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info
