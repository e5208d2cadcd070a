# sensorlake: `make demo` runs the embedded demo, `make test` runs the test suite.
# Each target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SECONDS ?= 60
DEVICES ?= 20

.PHONY: demo test lint bench clean install

$(BIN)/sensorlake: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,server]"
	@touch $@

install: $(BIN)/sensorlake

demo: install
	$(BIN)/sensorlake demo --devices $(DEVICES) --seconds $(SECONDS)

test: install
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check src tests bench

bench: install  # the embedded floors; every bench/*.py also runs on its own (--help)
	$(BIN)/python bench/ingest_embedded.py
	$(BIN)/python bench/worker_stages.py --kind batch --messages 20000

clean:
	rm -rf $(VENV) sensorlake-data .pytest_cache
