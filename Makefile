# Every target installs what it needs: a fresh clone runs `make run` or `make test` directly.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-containers reliability lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/spendstream dev --simulate --rate 0.3 --backfill 14d

test: install
	$(BIN)/python -m pytest -m "not reliability" -q

test-containers: install
	$(BIN)/python -m pytest -m containers -q -rs

# The whole fault-injection suite (its fast cases also run in `make test`), then
# RELIABILITY.md from the cases' tallies.
RELIABILITY_DIR := .spendstream/reliability
# A marker expression to run part of the suite: .ci/run leaves out the cases marked
# `long` (RELIABILITY_SELECT='not long') to stay under 45 minutes on 2 cores.
RELIABILITY_SELECT ?=
reliability: install
	mkdir -p $(RELIABILITY_DIR) && rm -f $(RELIABILITY_DIR)/results.jsonl
	set -o pipefail; SPENDSTREAM_RELIABILITY_REPORT=$(CURDIR)/$(RELIABILITY_DIR)/results.jsonl \
		$(BIN)/python -m pytest tests/reliability -q -p no:cacheprovider -rfExXs --durations=25 \
		$(if $(RELIABILITY_SELECT),-m "$(RELIABILITY_SELECT)") \
		| tee $(RELIABILITY_DIR)/pytest.log; status=$$?; \
	$(BIN)/python -m tests.reliability.report $(RELIABILITY_DIR)/results.jsonl \
		--command "make reliability$(if $(RELIABILITY_SELECT), RELIABILITY_SELECT='$(RELIABILITY_SELECT)')" --outcome "$$(tail -1 $(RELIABILITY_DIR)/pytest.log)"; \
	exit $$status

lint: install
	$(BIN)/ruff check streams detectors schemas tests bench
	$(BIN)/ruff format --check streams detectors schemas tests bench
	$(BIN)/mypy
	@if docker compose version >/dev/null 2>&1; then \
		SPENDSTREAM_ENV_FILE=deploy/env.example docker compose config -q; \
	elif command -v docker-compose >/dev/null 2>&1; then \
		SPENDSTREAM_ENV_FILE=deploy/env.example docker-compose config -q; \
	else echo "docker compose not installed: compose file not validated (apt-get install docker-compose)"; fi

bench: install
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .spendstream
