# Two commands: `make serve` (set up, then serve the data/ projects) and `make test`.
# Both are idempotent: stamps in .venv record what is already installed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS   ?=

.PHONY: serve test bench clean

serve: $(VENV)/.installed
	$(VENV)/bin/seqvis serve --data data $(ARGS)

test: $(VENV)/.test-installed /usr/bin/chromium
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

/usr/bin/chromium:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

clean:
	rm -rf $(VENV) .pytest_cache
