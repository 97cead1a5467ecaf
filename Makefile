# `make demo` runs the main job on the embedded default; `make test` lints and runs the tests (CPU).
# Both install what they need into .venv first (idempotent: a second `make install` is a no-op).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# On a machine without an NVIDIA GPU, pin the CPU build of torch (1.2 GB instead of ~5.6 GB for a CUDA build).
# Override with `make install TORCH=torch` to let pip choose (e.g. on a GPU machine).
TORCH  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")

.PHONY: install demo wind-tunnel test test-statistics test-distributed test-lifecycle test-slurm test-wheel lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile "$(TORCH)"
	$(BIN)/python -m pip install -q --no-compile -e ".[dev,slurm]"
	@# pip byte-compiles on one core; compileall on every core (25 s less here). Compiled now or never: with
	@# PYTHONDONTWRITEBYTECODE set (as on CI) every process would compile torch again on import. A file only a
	@# newer Python parses (torch ships one for 3.12) fails here as it would under pip, harmlessly: hence the -.
	-$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null
	touch $(STAMP)

# The demo: sweep, fit (laws, verdicts, recommendation, verify.yaml), train the verification sweep at 3x the
# largest budget, and check the predictions against it.
RESULTS ?= $(or $(SCALING_RESULTS),results)
demo: install
	$(BIN)/scaling sweep demo --workers 2 --results-dir $(RESULTS)
	$(BIN)/scaling fit demo --target-flops 1.8e12 --results-dir $(RESULTS)
	$(BIN)/scaling sweep $(RESULTS)/demo/fit/verify.yaml --workers 2 --results-dir $(RESULTS)
	$(BIN)/scaling verify demo-verify --results-dir $(RESULTS)
	@echo "The demo checks the lr law. Its loss law is one model's data-scaling curve (every cell is d64 L2), not the"
	@echo "compute-optimal frontier a loss prediction needs: \`make wind-tunnel\` sizes the model with the budget and checks it."

# The wind tunnel in miniature (Ling 2.0's procedure on the CPU): a first lr law, the allocation law (IsoFLOP,
# branched cooldowns), five compute-optimal rungs from those laws (each an lr bowl), then a held-out rung 3x beyond
# them, trained and checked: the rungs' loss and lr laws against what training measured there (figure in
# RESULTS/wind_tunnel_cpu_check/verify/). WT_CHECK=8e12 checks a 10x extrapolation instead.
WT       := $(BIN)/scaling
WT_LR    = $(RESULTS)/wind_tunnel_cpu_lr/fit/fit.json
WT_ISO   = $(RESULTS)/wind_tunnel_cpu_isoflop/fit/fit.json
WT_RUNGS = $(RESULTS)/wind_tunnel_cpu/fit/fit.json
WT_CHECK ?= 2.4e12
wind-tunnel: install
	$(WT) sweep wind_tunnel_cpu_lr --workers 2 --results-dir $(RESULTS)
	$(WT) fit wind_tunnel_cpu_lr --results-dir $(RESULTS)
	$(WT) sweep wind_tunnel_cpu_isoflop --workers 2 --results-dir $(RESULTS) laws=$(WT_LR)
	$(WT) fit wind_tunnel_cpu_isoflop --results-dir $(RESULTS)
	$(WT) sweep wind_tunnel_cpu --workers 2 --results-dir $(RESULTS) laws=$(WT_ISO) lr.law=$(WT_LR)
	$(WT) fit wind_tunnel_cpu --results-dir $(RESULTS) --target-flops $(WT_CHECK)
	$(WT) sweep wind_tunnel_cpu_check --workers 2 --results-dir $(RESULTS) laws=$(WT_ISO) lr.law=$(WT_RUNGS) \
	  'budgets=[$(WT_CHECK)]'
	$(WT) verify wind_tunnel_cpu_check --results-dir $(RESULTS) --laws $(WT_RUNGS)

lint: install
	$(BIN)/ruff check scaling tests analysis

# The test suite on CPU (under 8 minutes on a 2-core machine, install included). Separate targets, all run by CI:
# runs trained over several processes (`make test-distributed`: torchrun process groups, DDP and FSDP against one
# process; about 1 minute), the fitter's coverage studies (`make test-statistics`), the process-lifecycle tests
# (`make test-lifecycle`: SIGKILL/SIGTERM of launchers and
# runs, two launchers or two trainings at once, a signal to one torchrun rank, a killed FSDP run; about 3 minutes
# of real processes), the Slurm integration tests (`make test-slurm`) and the installed wheel (`make test-wheel`).
test: lint
	$(BIN)/python -m pytest -q -m "not slurm and not lifecycle and not distributed and not statistics" tests

# The fitter's coverage studies: hundreds of synthetic sweeps drawn from generators that are not its model
# (asymmetric and heteroscedastic bowls, per-seed offsets, saturating loss laws, two families' leverage), each
# checking that 95% intervals cover the truth in 88-99% of them. About 6.5 minutes on 2 cores.
test-statistics: install
	$(BIN)/python -m pytest -q -m statistics tests

test-distributed: install
	$(BIN)/python -m pytest -q -m "distributed and not lifecycle" tests

test-lifecycle: install
	$(BIN)/python -m pytest -q -m lifecycle tests

# The Slurm integration tests on a real one-node cluster (Debian's slurmctld, slurmd, munge), started here and
# stopped on exit, every step bounded by a timeout. Needs root and apt-get (CI has both); skipped otherwise.
SLURM_CI_DIR ?= /tmp/slurmci
test-slurm: install
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "test-slurm: skipped (starting a one-node Slurm cluster needs root and apt-get)"; exit 0; fi; \
	trap 'SLURM_CI_DIR=$(SLURM_CI_DIR) timeout 60 bash tests/slurm/slurm_down.sh' EXIT; \
	SLURM_CI_DIR=$(SLURM_CI_DIR) timeout 120 bash tests/slurm/slurm_up.sh && \
	. $(SLURM_CI_DIR)/env.sh && timeout 420 $(BIN)/python -m pytest -q -m slurm tests

# The package as a user installs it: the wheel built from this tree, installed with its dependencies into a fresh
# virtual environment outside the repo, run from an empty folder (the presets must come from the wheel). CI runs it
# after `make test`.
WHEEL_DIR ?= /tmp/scaling-wheel-test
TINY_RUN := budget_flops=2e9 model.d_model=32 model.n_heads=2 model.d_expert=32 model.seq_len=64 \
            train.batch_size=4 data.val_tokens=2048 wandb.mode=disabled
test-wheel: install
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)/empty
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w $(WHEEL_DIR) .
	$(PYTHON) -m venv $(WHEEL_DIR)/venv
	$(WHEEL_DIR)/venv/bin/python -m pip install -q "$(TORCH)" $(WHEEL_DIR)/scaling-*.whl
	cd $(WHEEL_DIR)/empty && SCALING_CACHE=$(WHEEL_DIR)/cache ../venv/bin/scaling sweep demo --dry-run --no-probe
	cd $(WHEEL_DIR)/empty && SCALING_CACHE=$(WHEEL_DIR)/cache ../venv/bin/scaling train $(TINY_RUN) --no-progress \
	  --results-dir $(WHEEL_DIR)/results
	test -n "$$(ls $(WHEEL_DIR)/results/single/runs/*.json)" && test ! -e $(WHEEL_DIR)/empty/results
	@echo "test-wheel: the installed wheel planned the demo and trained a run from an empty folder"

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
