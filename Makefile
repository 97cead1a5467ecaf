# `make demo` runs the main job on the embedded default; `make test` lints and runs the tests.
# Both install what they need into .venv first (idempotent: a second `make install` is a no-op).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# On a machine without an NVIDIA GPU, pin the CPU build of torch (1.2 GB instead of ~5.6 GB for a CUDA build).
# Override with `make install TORCH=torch` to let pip choose (e.g. on a GPU machine).
TORCH  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")

.PHONY: install demo test test-slurm lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,slurm]"
	touch $(STAMP)

# The demo: sweep, fit (laws, verdicts, recommendation, verify.yaml), train the verification sweep at 3x the
# largest budget, and check the predictions against it.
RESULTS ?= $(or $(SCALING_RESULTS),results)
demo: install
	$(BIN)/scaling sweep demo --workers 2 --results-dir $(RESULTS)
	$(BIN)/scaling fit demo --target-flops 3e12 --results-dir $(RESULTS)
	$(BIN)/scaling sweep $(RESULTS)/demo/fit/verify.yaml --workers 2 --results-dir $(RESULTS)
	$(BIN)/scaling fit --check demo-verify --results-dir $(RESULTS)

lint: install
	$(BIN)/ruff check scaling tests analysis

test: lint
	$(BIN)/python -m pytest -q -m "not slurm" tests
	$(MAKE) test-slurm

# The Slurm integration tests on a real one-node cluster (Debian's slurmctld, slurmd, munge), started here and
# stopped on exit, every step bounded by a timeout. Needs root and apt-get (CI has both); skipped otherwise.
SLURM_CI_DIR ?= /tmp/slurmci
test-slurm: install
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "test-slurm: skipped (starting a one-node Slurm cluster needs root and apt-get)"; exit 0; fi; \
	trap 'SLURM_CI_DIR=$(SLURM_CI_DIR) timeout 60 bash tests/slurm/slurm_down.sh' EXIT; \
	SLURM_CI_DIR=$(SLURM_CI_DIR) timeout 120 bash tests/slurm/slurm_up.sh && \
	. $(SLURM_CI_DIR)/env.sh && timeout 240 $(BIN)/python -m pytest -q -m slurm tests

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
