# Two commands: `make serve` (set up, then serve the data/ projects) and `make test`.
# Both are idempotent: stamps in .venv record what is already installed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS   ?=

.PHONY: serve test bench clean

FASHION := /usr/share/datasets/fashion-mnist

serve: $(VENV)/.installed $(FASHION)
	$(VENV)/bin/seqvis serve --data data $(ARGS)

test: $(VENV)/.test-installed /usr/bin/chromium $(FASHION)
	$(PY) -m pytest $(ARGS)

bench: $(VENV)/.installed
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU wheel, so that nothing later resolves a (CUDA) torch of its own.
$(VENV)/.torch: | $(PY)
	$(PIP) install torch==2.13.0
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[test]'
	touch $@

# Debian packages: the browser for page tests, Fashion-MNIST for the CNN demo's objects.
/usr/bin/chromium:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

$(FASHION):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist

clean:
	rm -rf $(VENV) .pytest_cache
