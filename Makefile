# The two commands of the README. Each sets up what it needs (a virtual environment in
# .venv with this project installed, editable) before it runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: matrix test clean

## matrix: the conformance matrix over the built-in backends -> reports/conformance.{json,md}
matrix: $(STAMP)
	$(BIN)/bnconform run --out reports

## test: the suite's own tests and every conformance case on every built-in backend
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist worksteal

$(STAMP): pyproject.toml setup.py $(wildcard runners/backends/c/*)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

clean:
	rm -rf $(VENV) reports/*.json reports/*.md
