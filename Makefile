# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Tests run one torch thread each (tests/conftest.py): one pytest worker per core uses the machine.
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: help demo test lint install clean

help:  ## list the targets
	@echo "make demo     create .venv, install, train a small agent end to end, say where its logs and plots went"
	@echo "make test     create .venv, install, run ruff and the test suite (TEST_WORKERS=$(TEST_WORKERS) pytest workers)"
	@echo "make lint     ruff over the repository"
	@echo "make install  create .venv and install the package with its extras (dmc, extra, tests)"
	@echo "make clean    remove .venv and build artefacts"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned and installed first, so that `torch>=2.3` in setup.cfg is already satisfied. On this project's
# machines a CPU build of torch 2.13.0 lies on disk and pip takes it; elsewhere `pip install torch==2.13.0` takes
# PyPI's wheel, which on Linux x86-64 is the CUDA build (several GB). For a CPU build there, install torch first
# from https://download.pytorch.org/whl/cpu (README: "Installing torch"), then run make.
$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[dmc,extra,tests]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -ra --durations=15 -n $(TEST_WORKERS) --dist worksteal

demo: $(STAMP)
	$(BIN)/python examples/demo.py

clean:
	rm -rf $(VENV) build *.egg-info
