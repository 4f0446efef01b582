# The two commands a new user needs (see README):
#   make demo   set up, then run the whole recipe on the built-in world
#   make test   set up, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines: this torch build lies on the local disk, so nothing multi-GB is downloaded.
# GPU machines: `make setup TORCH_SPEC="torch==2.x.y"` (or pre-install your CUDA torch in the venv).
TORCH_SPEC ?= torch==2.13.0
PRESET ?= default
RUN_DIR ?= runs/$(PRESET)
TEST_WORKERS ?= 2

.PHONY: setup demo smoke test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(VENV)/bin/alignlab pipeline --preset $(PRESET) --output-dir $(RUN_DIR)

smoke:
	$(MAKE) demo PRESET=smoke

test: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	@# the tests start dozens of Python processes; with PYTHONDONTWRITEBYTECODE set, each would compile the package anew
	$(PY) -m compileall -q src tests >/dev/null
	@# 2 workers, a test file each, one thread each: the tests' models are tiny, so a second intra-op thread
	@# mostly waits, and a second worker does not (README, Tests). TEST_WORKERS=0 runs them in one process.
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf runs .pytest_cache
