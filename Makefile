# Every target installs what it needs: a fresh clone runs `make run` or `make test` directly.
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
	$(BIN)/spendstream dev --simulate

test: install
	$(BIN)/python -m pytest -m "not reliability" -q

test-containers: install
	$(BIN)/python -m pytest -m containers -q -rs

reliability: install
	$(BIN)/python -m pytest -m reliability -q

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
