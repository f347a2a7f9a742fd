# Two commands do everything on a fresh machine with Python 3.10+ and pip:
#   make book   -- create .venv, install, execute every chapter, build _build/html
#   make test   -- library tests + doctests, nbval over every chapter, ruff, HTML build (-W)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
JB     := $(VENV)/bin/jupyter-book
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(wildcard book/*.ipynb)

.PHONY: book test install lib-test nbval lint html-check bench clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "NVIDIA GPU found: installing the CUDA build of jaxlib (jax[cuda12])"; \
	  $(PY) -m pip install --quiet --upgrade "jax[cuda12]"; \
	else \
	  echo "No NVIDIA GPU found: using the CPU build of jaxlib"; \
	fi
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

book: $(STAMP)
	@$(PY) -c "import bilevel_lib as bl; print('Executing every chapter with', bl.device_report())"
	$(JB) build . --builder html
	@echo "The book is in _build/html/index.html"

test: lib-test lint nbval html-check

lib-test: $(STAMP)
	$(PY) -m pytest tests bilevel_lib --doctest-modules

lint: $(STAMP)
	$(VENV)/bin/ruff check bilevel_lib tests benchmarks

# nbval re-executes every chapter and compares the cells marked NBVAL_CHECK_OUTPUT.
nbval: $(STAMP)
	@$(PY) -c "import bilevel_lib as bl; print('nbval runs the chapters with', bl.device_report())"
	$(PY) -m pytest -p no:cacheprovider --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg \
	  --nbval-cell-timeout 600 $(NOTEBOOKS)

# HTML build from the stored outputs nbval has just verified, warnings as errors: a broken
# reference, citation or figure fails it. (`make book` is the build that re-executes.)
html-check: $(STAMP)
	@mkdir -p _build
	@sed -e 's/^\(  *execute_notebooks:\).*/\1 "off"/' _config.yml > _build/_config_check.yml
	$(JB) build . --builder html --config _build/_config_check.yml --warningiserror --nitpick \
	  --keep-going --path-output _build/check

bench: $(STAMP)
	$(PY) -m pip install --quiet -r benchmarks/requirements.txt
	$(PY) benchmarks/bench_jaxopt.py
	$(PY) benchmarks/bench_sweep.py

clean:
	rm -rf _build
