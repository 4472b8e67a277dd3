# Every way of working with the project goes through these targets.
# A fresh machine needs Python 3.11+, make and a C compiler: the first target run builds .venv
# (and build/h2gen, the benchmark's load generator, for test and bench: see its rule).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
GEN    := build/gen/.stamp
H2GEN  := build/h2gen
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
test: $(GEN) $(H2GEN)
	$(PY) -m pytest $(PYTEST_ARGS)

## lint: ruff and mypy
lint: $(GEN)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## bench: benchmarks against same-run baselines (ARGS=--quick for a short run)
bench: $(GEN) $(H2GEN)
	$(PY) -m bench $(ARGS)

# The benchmark's load generator (also under test): C on nghttp2. Debian's libnghttp2-dev is
# installed here when the headers are missing and this is a Debian machine run as root.
$(H2GEN): bench/h2gen/h2gen.c
	@echo '#include <nghttp2/nghttp2.h>' | $(CC) -E - >/dev/null 2>&1 || \
	  { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
	    { apt-get install -y --no-install-recommends libnghttp2-dev >/dev/null 2>&1 || \
	      { apt-get update >/dev/null 2>&1 && \
	        apt-get install -y --no-install-recommends libnghttp2-dev >/dev/null 2>&1; }; }; } || \
	  { echo 'build/h2gen needs a C compiler and the nghttp2 headers (apt-get install libnghttp2-dev)'; exit 1; }
	@mkdir -p build
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $< -lnghttp2

## demo: one SELL and one BUY ramp end to end through the REST gateway (needs `make run`)
demo: $(GEN)
	$(PY) -m pendulumpay_client.demo

## migrate: apply every schema's migrations to DATABASE_URL
migrate: $(GEN)
	$(PY) -m devstack migrate

clean:
	rm -rf build .data .pytest_cache .mypy_cache .ruff_cache
