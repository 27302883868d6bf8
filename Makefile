# The two commands of the README. Each sets up what it needs (a virtual environment in
# .venv with this project installed, editable, with its dev tools) before it runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: matrix test lint baseline check-baseline clean

## matrix: the conformance matrix over the built-in backends -> reports/conformance.{json,md}
matrix: $(STAMP)
	$(BIN)/bnconform run --out reports

## test: ruff, mypy, then the suite's own tests and every conformance case on every built-in backend
## (the sources byte-compiled first, as pip does for an installed package: the tests start
## hundreds of bnconform processes, and PYTHONDONTWRITEBYTECODE would make each compile them again)
test: lint
	$(BIN)/python -m compileall -q cases runners bnconform tests
	$(BIN)/python -m pytest -n auto --dist worksteal

## lint: ruff and mypy, configured in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## baseline: refresh the committed baseline (conformance and timing) from this machine
baseline: $(STAMP)
	$(BIN)/bnconform run --out reports/baseline
	$(BIN)/bnconform bench --out reports/baseline
	rm -f reports/baseline/conformance.md reports/baseline/timing.md

## check-baseline: the conformance matrix compared with the committed baseline (exit 1 on a regression)
check-baseline: $(STAMP)
	$(BIN)/bnconform run --out reports
	$(BIN)/bnconform compare reports/baseline/conformance.json reports/conformance.json --md reports/compare.md

$(STAMP): pyproject.toml setup.py $(wildcard runners/backends/c/*)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) build reports/*.json reports/*.md reports/*.html
