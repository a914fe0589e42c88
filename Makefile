# All set-up goes through here: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test bench clean

$(BIN)/hodata: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch on a machine without one pulls a CUDA build.
	# A user with CUDA installs their own torch into the venv before `make setup`.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -e ".[test]"
	touch $(BIN)/hodata

setup: $(BIN)/hodata

demo: setup
	$(BIN)/hodata demo --output demo_output

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) demo_output
