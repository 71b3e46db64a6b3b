# The README's two commands:  `make quickstart`  and  `make test`.
# Both set everything up first (a virtualenv in .venv with the CPU stack) and
# are quick the second time: set-up reruns only when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
KIT     = $(VENV)/bin/alexnet-kit
STAMP   = $(VENV)/.installed
RUN    ?= runs/quickstart

.PHONY: setup quickstart demo test test-fast lint clean

setup: $(STAMP)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[cpu,train,demo,explain,dev]"
	touch $(STAMP)

# (a) the main job end to end on the data shipped in the repo:
#     train -> evaluate -> export (verified) -> index -> classify -> similar.
#     Every step is skipped or resumed when its result is already there and newer than
#     what it is made from (a model retrained with --overwrite is exported and indexed again).
QS_DATA  = examples/quickstart-data
QS_PHOTO = $(QS_DATA)/watch/image_0003.jpg

quickstart: setup
	@echo "== 1/6 train the quickstart recipe on $(QS_DATA) (resumes an interrupted run)"
	@if [ -f $(RUN)/.trained ]; then echo "already trained: $(RUN)/model.safetensors"; \
	elif ls $(RUN)/checkpoints/*.pt >/dev/null 2>&1; then $(KIT) train --recipe quickstart --out $(RUN) --resume && touch $(RUN)/.trained; \
	else $(KIT) train --recipe quickstart --out $(RUN) && touch $(RUN)/.trained; fi
	@echo "== 2/6 evaluate on the held-out photos, ten crops (§4.1)"
	$(KIT) evaluate $(RUN)/model.safetensors --data $(RUN)/packed --crops 10
	@echo "== 3/6 export to ONNX, verified against the PyTorch model before it is written"
	@if [ $(RUN)/model.onnx -nt $(RUN)/model.safetensors ]; then echo "already exported: $(RUN)/model.onnx"; \
	else $(KIT) export $(RUN)/model.safetensors --format onnx --out $(RUN)/model.onnx; fi
	@echo "== 4/6 index the photos by their fc7 features (only new or changed ones when it exists)"
	@if [ $(RUN)/photos.index/photos.sqlite -nt $(RUN)/model.onnx ]; then $(KIT) index add $(RUN)/photos.index --quiet; \
	else $(KIT) index build $(QS_DATA) --out $(RUN)/photos.index --model $(RUN)/model.onnx --quiet --force; fi
	@echo "== 5/6 classify a held-out photo and the demo photos (ten crops, ONNX)"
	$(KIT) classify --model $(RUN)/model.onnx --top 3 $(QS_PHOTO) examples/photos
	@echo "== 6/6 the most similar photos"
	$(KIT) similar $(QS_PHOTO) --index $(RUN)/photos.index --top 5
	@echo "done: try 'make demo', or see README.md"

demo: setup
	$(KIT) demo --model $(RUN)/model.onnx --index $(RUN)/photos.index

# (b) the whole test suite (CI runs this through .ci/run), after the lint.
test: setup lint
	bash scripts/install-browser.sh   # Debian chromium for the real-browser demo test (no-op when present)
	$(PY) -m pytest -q

# The inner loop: everything not marked slow (no subprocess training, no browser, no wheel build).
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# pyflakes over every Python file of the project: unused imports and names, undefined names.
lint: setup
	$(PY) -m pyflakes alexnet_kit train export apps scripts benchmarks tests

clean:
	rm -rf $(VENV) runs .pytest_cache
