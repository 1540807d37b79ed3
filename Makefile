# Every target creates .venv on first use; a fresh machine needs only Python 3.11+ and pip.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck proto proto-check policy-test bench lock sbom fuzz clean

# Dependencies come from the lock, every file checked against its hash (pip, setuptools and
# the tools included); the project itself is installed without dependencies, so nothing
# unlocked gets in, and `pip check` fails if pyproject.toml wants what the lock lacks
# (run `make lock`).
$(STAMP): pyproject.toml requirements-dev.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
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

# The locks are universal (any OS, Python >= 3.11) with every file's hash; the runtime lock
# (what the image installs) and the build lock (the image's build backend) are constrained
# to the dev lock's versions, so tests run on exactly what ships.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet
lock: $(STAMP) ## re-resolve the three lock files from pyproject.toml (build: the image's backend)
	$(BIN)/uv pip compile pyproject.toml --extra dev $(LOCK_FLAGS) -o requirements-dev.lock
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) --constraint requirements-dev.lock \
		-o requirements.lock
	printf 'setuptools>=69\n' | $(BIN)/uv pip compile - $(LOCK_FLAGS) \
		--constraint requirements-dev.lock -o requirements-build.lock

sbom: $(STAMP) ## CycloneDX SBOM of the runtime lock: build/sbom.cdx.json
	mkdir -p build
	$(BIN)/cyclonedx-py requirements requirements.lock --pyproject pyproject.toml \
		--output-reproducible --output-format JSON --output-file build/sbom.cdx.json

FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP) ## the fuzz tests with FUZZ_EXAMPLES inputs per property; counts in build/fuzz-counts.json
	PDP_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -p no:cacheprovider service/tests/test_fuzz.py
	cat build/fuzz-counts.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
