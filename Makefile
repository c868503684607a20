# Two commands matter: `make run` and `make test`. Both create .venv at the repo root when missing.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU wheel; GPU users install a CUDA torch into .venv first (see README) and it is kept.
TORCH  ?= torch==2.13.0

.PHONY: run test install install-dev clean

# setuptools too: tests/test_install.py builds the project with the venv's own (pyproject's build-system minimum).
$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=77'

# Install torch before the project so pip never resolves an open-ended torch to a multi-GB CUDA build.
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(VENV)/bin/rwkv-bot run $(ARGS)

# The dashboard's browser tests drive Debian's Chromium; installed here when missing (CI starts from a clean machine).
CHROMIUM ?= /usr/bin/chromium

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q chromium chromium-driver >/dev/null || \
		{ apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; } || \
		echo "chromium could not be installed: the browser tests will be skipped"; \
	else echo "not root (or no apt-get): install chromium yourself, or the browser tests are skipped"; fi

test: $(VENV)/.installed-dev | $(CHROMIUM)
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
