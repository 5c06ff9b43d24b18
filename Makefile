# pcalm — every command a user needs. `make help` lists them.
#   make setup && make test                    set up and check (fresh clone)
#   make figure2 SCALE=smoke LAUNCHER=local    run what is missing, collect, plot
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Plain torch==2.13.0: PyPI's CUDA build on Linux x86-64, the CPU build on macOS/Windows (README:
# "Set up and test" says how to ask for the CPU-only build on Linux)
TORCH ?= torch==2.13.0
EXP ?= figure2
SCALE ?= smoke
LAUNCHER ?= local
ARGS ?=
DATA ?= fashion_mnist
# Where runs, tables and reports go: PCALM_RESULTS if set (as in configs/config.yaml), else results
RESULTS := $(or $(PCALM_RESULTS),results)
FIGURES := figure1 figure2 figure2_mnist figure3 figure4 figure5 figure6 figure7 figure8 \
           figure9 figure10 figure_eta

.PHONY: help setup test test-slow lint data eta-table sweep collect figures report reference bench gpu-check wandb-sync slurm-up slurm-down \
        mutants clean-results $(FIGURES)

help:  ## list the commands
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18
	@for f in $(FIGURES); do printf '%-18s%s\n' $$f "run what is missing, collect, plot → figures/$$f.{pdf,png}"; done

setup:  ## create .venv and install everything (torch: CUDA build on Linux from PyPI; README)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade --quiet pip
	$(VENV)/bin/pip install --quiet "$(TORCH)" -e ".[dev]"

test:  ## the default test suite (fast; CPU only)
	$(PY) -m pytest

test-slow:  ## the longer end-to-end checks too
	$(PY) -m pytest -m "slow or not slow"

lint:
	$(VENV)/bin/ruff check .

# Mutation testing (mutmut, the `dev` extra; settings in pyproject.toml [tool.mutmut]): each
# small change of the math and the training loop must fail a test. Slow (about a second per
# mutant on 2 cores): MUTANTS="pcalm.core.energy*" runs one module's mutants; `mutmut show NAME`
# prints a survivor's diff. Results stay in mutants/ (git-ignored), so a rerun resumes.
MUTANTS ?=
mutants:  ## mutation testing of the math and training loop (MUTANTS="pcalm.core.energy*" for one module)
	$(VENV)/bin/mutmut run --max-children $$(nproc) $(if $(MUTANTS),"$(MUTANTS)")
	$(VENV)/bin/mutmut results

slurm-up:  ## a one-node SLURM cluster on this machine (Debian/Ubuntu, root; ~30 s; README)
	bash scripts/local-slurm.sh

slurm-down:  ## stop what slurm-up started (PURGE=1 also removes its packages)
	bash scripts/local-slurm-stop.sh

data:  ## download what MNIST + Fashion-MNIST lack (43 MB, MD5-checked; runs do it too; docs/DATA.md)
	$(PY) scripts/fetch_data.py

eta-table:  ## per-cell activity step η_h = 1/λ_max → configs/eta_table.csv (DATA=, ARGS=...)
	$(PY) scripts/eta_table.py $(if $(filter command line environment%,$(origin DATA)),--data $(DATA)) $(ARGS)

sweep:  ## run an experiment's sweep, skipping finished runs (EXP=, SCALE=, LAUNCHER=)
	$(PY) experiments/sweep.py experiment=$(EXP) scale=$(SCALE) sweep.launcher=$(LAUNCHER) $(ARGS)

collect:  ## gather an experiment's runs into results/tables/EXP-SCALE.csv
	$(PY) scripts/collect.py experiment=$(EXP) scale=$(SCALE) $(ARGS)

# Diagnostic figures take seconds per run: in-process beats starting parallel jobs.
figure1 figure3 figure4 figure5 figure8 figure9: LAUNCHER = basic

# SCALE=paper draws the committed reference tables (results/reference/tables, this
# repository's own paper-scale runs) when they exist, without training; TRAIN=1 runs what is
# missing of the grid here first and draws your own runs. SCALE=paper_cpu: the subset of the
# paper grid a CPU finishes (configs/scale/paper_cpu.yaml), trained here.
REFERENCE := results/reference/tables
TRAIN ?=
from_reference = $(and $(filter paper,$(SCALE)),$(if $(TRAIN),,$(wildcard $(REFERENCE)/$(1)-paper.csv)))

$(FIGURES):  ## figureN: run what is missing, collect, plot → figures/figureN.{pdf,png}
	$(if $(call from_reference,$@),@echo "drawing $@ from the committed paper-scale tables in $(REFERENCE) (TRAIN=1: run the grid here)")
	$(if $(call from_reference,$@),$(PY) scripts/plot_$@.py --scale paper --tables $(REFERENCE))
	$(if $(call from_reference,$@),,$(MAKE) sweep EXP=$@ LAUNCHER=$(LAUNCHER))
	$(if $(call from_reference,$@),,$(MAKE) collect EXP=$@)
	$(if $(call from_reference,$@),,$(PY) scripts/plot_$@.py --scale $(SCALE) --tables $(RESULTS)/tables)
	$(if $(call from_reference,$@),,$(PY) scripts/dashboard.py experiment=$@ scale=$(SCALE) $(ARGS))

figures: $(FIGURES)  ## every figure (figure1 … figure10, figure2_mnist, figure_eta)

# SCALE=paper reports on the committed reference unless TRAIN=1 or PCALM_RESULTS names your own
report_from_reference = $(and $(filter paper,$(SCALE)),$(if $(TRAIN)$(PCALM_RESULTS),,$(wildcard $(REFERENCE)/*-paper.csv)))
report:  ## reproduction scorecard → results/report-SCALE.md (SCALE=paper: the reference tables)
	$(PY) scripts/report.py --scale $(SCALE) $(if $(report_from_reference),--tables $(REFERENCE) --out results/report-paper.md,--tables $(RESULTS)/tables --out $(RESULTS)/report-$(SCALE).md)

reference:  ## put EXP's collected tables on record in results/reference/tables (SCALE=paper)
	$(PY) scripts/record_reference.py $(EXP) --scale $(SCALE)

# Offline wandb runs (logger=offline, or WANDB_MODE=offline on nodes without internet) stay in
# each run folder's wandb/ and in $(RESULTS)/dashboard/; this uploads those not yet synced.
wandb-sync:  ## upload offline wandb runs (run folders + figure summaries) to wandb
	find $(RESULTS) -maxdepth 5 -type d -path '*/wandb/offline-run-*' -prune -print0 | sort -z | xargs -0 -r $(VENV)/bin/wandb sync --no-include-synced --yes

bench:  ## speed table → results/bench.csv
	$(PY) scripts/bench.py

# Staged, each stage with its own timeout, < 5 min in all; fits a bare GPU machine (python3 +
# torch, no Hydra/wandb: `make gpu-check PY=python3`). Logs and tables → $OUT if set, else
# results/gpu-check (scripts/gpu_check.sh says what each file holds).
gpu-check:  ## on a CUDA machine: real-GPU checks, tests, bench, grid projection → results/gpu-check
	PY=$(PY) bash scripts/gpu_check.sh

clean-results:  ## delete every run folder (asks first)
	@read -p "delete results/runs? [y/N] " ok && [ "$$ok" = y ] && rm -rf results/runs || true
