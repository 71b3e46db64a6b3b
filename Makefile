# The README's two commands:  `make quickstart`  and  `make test`.
# Both set everything up first (a virtualenv in .venv with the CPU stack) and
# are quick the second time: set-up reruns only when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
KIT     = $(VENV)/bin/alexnet-kit
STAMP   = $(VENV)/.installed
RUN    ?= runs/quickstart

.PHONY: setup quickstart test clean

setup: $(STAMP)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[cpu,train,demo,dev]"
	touch $(STAMP)

# (a) the main job end to end on the data shipped in the repo.
quickstart: setup
	mkdir -p $(RUN)
	test -f $(RUN)/model.safetensors || $(KIT) init $(RUN)/model.safetensors
	$(KIT) classify --model $(RUN)/model.safetensors --top 5 examples/photos

# (b) the whole test suite (CI runs this through .ci/run).
test: setup
	bash scripts/install-browser.sh   # Debian chromium for the real-browser demo test (no-op when present)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
