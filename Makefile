# spft — the README's commands. `make demo` and `make test` install everything first (into .venv).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip
# Pinned here for reproducibility (pyproject.toml only sets minimums). These are the builds this project is tested
# with; on x86_64 torch 2.14.1 + torchvision 0.29.1 come from the local wheel cache on the development machines.
TORCH_PINS = torch==2.14.1 torchvision==0.29.1

export HF_HUB_OFFLINE ?= 1
export YOLO_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export NO_MKDOCS_2_WARNING ?= 1

MKDOCS  = $(VENV)/bin/mkdocs
SITE   ?= site

.PHONY: install demo test test-fast test-lowest lint docs bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_PINS)
	$(PIP) install --quiet -e ".[dev,detect,export,slurm,track]"
	touch $@

demo: install
	$(VENV)/bin/spft demo $(if $(OUT),--out $(OUT),)

test: install
	$(PY) -m pytest -q --durations=10
	$(MKDOCS) build --strict --quiet --site-dir $(SITE)

test-fast: install
	$(PY) -m pytest -q -m "not slow"

# The suite (without the slow CLI runs) against the LOWEST versions pyproject.toml allows: a separate venv, every
# dependency pinned to its ">=" bound (tools/lowest_constraints.py); torch and torchvision are TORCH_PINS (the local
# wheel cache), not torch's own lower bound. Not part of `make test`.
LOWEST ?= .venv-lowest
EXTRAS  = dev,detect,export,slurm,track

test-lowest: $(LOWEST)/.installed
	$(LOWEST)/bin/python -m pytest -q -m "not slow"

$(LOWEST)/.installed: pyproject.toml tools/lowest_constraints.py
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/pip install --quiet --upgrade pip
	$(LOWEST)/bin/python tools/lowest_constraints.py --extras $(EXTRAS) --skip torch,torchvision > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/pip install --quiet -c $(LOWEST)/constraints.txt $(TORCH_PINS) -e ".[$(EXTRAS)]"
	touch $@

lint: install
	$(VENV)/bin/ruff check src tests

# The documentation site (mkdocs.yml, docs/) into $(SITE); strict: a broken link or anchor is an error. A live preview:
# $(VENV)/bin/mkdocs serve (http://127.0.0.1:8000). `make test` runs the same build.
docs: install
	$(MKDOCS) build --strict --site-dir $(SITE)

clean:
	rm -rf $(VENV) $(LOWEST) runs .pytest_cache $(SITE)

bench: install
	$(PY) benchmarks/bench.py --size small --stage1-images 2000
	$(PY) benchmarks/predict_bench.py --size small --images 256
