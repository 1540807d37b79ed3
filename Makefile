# Every target creates .venv on first use; a fresh machine needs only Python 3.11+ and pip.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck proto proto-check policy-test bench fuzz clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP) ## serve the default bundle on 127.0.0.1:50051
	$(BIN)/pdp serve

test: $(STAMP) ## the whole test suite (unit, gRPC end-to-end, conformance, policy suites)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

proto: $(STAMP) ## regenerate service/pdp/_proto from proto/
	$(BIN)/python scripts/gen_proto.py

proto-check: $(STAMP) ## fail if service/pdp/_proto is out of date
	$(BIN)/python scripts/gen_proto.py --check

policy-test: $(STAMP) ## the default bundle's policy suites: 100% coverage, no surviving mutant, JUnit
	mkdir -p build
	$(BIN)/pdp lint
	$(BIN)/pdp test --mutate --min-coverage 100 --junit build/policy-tests.xml

bench: $(STAMP)
	$(BIN)/pytest bench/ --benchmark-only

FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP) ## the fuzz tests with FUZZ_EXAMPLES inputs per property; counts in build/fuzz-counts.json
	PDP_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -p no:cacheprovider service/tests/test_fuzz.py
	cat build/fuzz-counts.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
