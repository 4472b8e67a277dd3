# Every way of working with the project goes through these targets.
# A fresh machine needs only Python 3.11+ and make: the first target run builds .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
GEN    := build/gen/.stamp
PROTO_SOURCES := $(shell find protos -name '*.proto')
PYTEST_ARGS ?=

.PHONY: all venv protos run test lint migrate clean bench demo

all: protos

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

$(GEN): $(STAMP) $(PROTO_SOURCES) scripts/build_protos.py
	$(PY) scripts/build_protos.py
	@touch $@

## protos: generate Python, mypy stubs and the descriptor set into build/
protos: $(GEN)

## run: bring the whole system up (embedded PostgreSQL unless DATABASE_URL is set)
run: $(GEN)
	$(PY) -m devstack

## test: the whole suite (TEST_DATABASE_URL, else Docker, else embedded PostgreSQL)
test: $(GEN)
	$(PY) -m pytest $(PYTEST_ARGS)

## lint: ruff and mypy
lint: $(GEN)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## bench: benchmarks against same-run baselines (ARGS=--quick for a short run)
bench: $(GEN)
	$(PY) -m bench $(ARGS)

## demo: one SELL and one BUY ramp end to end through the REST gateway (needs `make run`)
demo: $(GEN)
	$(PY) -m pendulumpay_client.demo

## migrate: apply every schema's migrations to DATABASE_URL
migrate: $(GEN)
	$(PY) -m devstack migrate

clean:
	rm -rf build .data .pytest_cache .mypy_cache .ruff_cache
