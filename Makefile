# Two entry points for a fresh machine: `make demo` (the PTTA demo) and `make test`.
# Both create .venv and install everything on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml examples/ptta/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The pinned CPU build of torch lies on disk here; an unpinned torch would pull a CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[test,bench]" -e "examples/ptta[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ptta demo --out runs/demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests

.PHONY: install demo test
