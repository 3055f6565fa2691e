# Every target installs what it needs: a fresh clone runs `make run` or `make test` directly.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test reliability lint bench clean

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

reliability: install
	$(BIN)/python -m pytest -m reliability -q

lint: install
	$(BIN)/ruff check streams detectors schemas tests bench
	$(BIN)/ruff format --check streams detectors schemas tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .spendstream
