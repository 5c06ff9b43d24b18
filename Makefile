# pcalm — every command a user needs. `make help` lists them.
#   make setup && make test                    set up and check (fresh clone)
#   make figure2 SCALE=smoke LAUNCHER=local    run what is missing, collect, plot
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
# Entry points (experiments/, scripts/) import `pcalm` and nothing by path: make them import this
# checkout's, also where the venv's editable install points at another clone of it
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
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

.PHONY: help setup test test-slow lint data eta-table sweep collect figures report reference bench gpu-check wandb-log wandb-sync slurm-up slurm-down \
        mutants clean-results $(FIGURES)

help:  ## list the commands and the variables they take
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18
	@for f in $(FIGURES); do printf '%-18s%s\n' $$f "run what is missing, collect, plot → figures/$$f-SCALE.{pdf,png}"; done
	@echo
	@echo "Variables (make figure2 SCALE=paper_cpu LAUNCHER=slurm ARGS='model.width=8,16'):"
	@grep -hE '^#= ' $(MAKEFILE_LIST) | sed -E 's/^#= //' | expand -t 18

# The variables a user sets; `make help` prints these lines ("#= NAME<tab>what it does").
#= EXP	the experiment of sweep, collect, wandb-log, reference (default figure2)
#= SCALE	smoke (default: a 2-core CPU) | paper (GPU/SLURM; draws results/reference) | paper_cpu
#= LAUNCHER	local (default: parallel jobs here) | slurm | basic (one process)
#= TRAIN	TRAIN=1: with SCALE=paper, run the grid here instead of drawing the reference
#= ARGS	overrides and flags passed on: ARGS='model.width=8 --dry-run'; make data ARGS='--mirror URL'
#= DATA	the dataset of eta-table (fashion_mnist | mnist)
#= LOCK	LOCK=1: setup installs the exact versions of requirements-lock.txt
#= TORCH	the torch requirement setup installs (default torch==2.13.0)
#= MUTANTS	the modules mutants tests (default: all of [tool.mutmut])
#= PCALM_RESULTS	(environment) where runs, tables and reports go (default results)
#= PCALM_DATA	(environment) where MNIST / Fashion-MNIST are (default data)

# LOCK=1: the exact environment that produced results/reference (requirements-lock.txt, pip
# freeze of it), then this checkout without dependencies. pip shows its progress (a CUDA torch
# is a multi-GB download); setuptools' notes about editable installs are silenced.
LOCK ?=
LOCKFILE := requirements-lock.txt
setup:  ## create .venv and install everything (torch: CUDA build on Linux from PyPI; LOCK=1: exact versions)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(if $(LOCK),$(VENV)/bin/pip install -r $(LOCKFILE))
	PYTHONWARNINGS=ignore $(VENV)/bin/pip install $(if $(LOCK),--no-deps,"$(TORCH)") -e ".[dev]"

test:  ## the default test suite (fast; CPU only)
	$(PY) -m pytest

test-slow:  ## the longer end-to-end checks too
	$(PY) -m pytest -m "slow or not slow"

lint:  ## ruff check of the code
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

data:  ## download what MNIST + Fashion-MNIST lack (43 MB, MD5-checked; ARGS='--mirror URL'; docs/DATA.md)
	$(PY) scripts/fetch_data.py $(ARGS)

eta-table:  ## per-cell activity step η_h = 1/λ_max → configs/eta_table.csv (DATA=, ARGS=...)
	$(PY) scripts/eta_table.py $(if $(filter command line environment%,$(origin DATA)),--data $(DATA)) $(ARGS)

sweep:  ## run an experiment's sweep, skipping finished runs (EXP=, SCALE=, LAUNCHER=)
	$(PY) experiments/sweep.py experiment=$(EXP) scale=$(SCALE) sweep.launcher=$(LAUNCHER) $(ARGS)

collect:  ## gather an experiment's runs into results/tables/EXP-SCALE.csv
	$(PY) experiments/collect.py experiment=$(EXP) scale=$(SCALE) $(ARGS)

# Diagnostic figures take seconds per run: in-process beats starting parallel jobs.
figure1 figure3 figure4 figure5 figure8 figure9: LAUNCHER = basic

# SCALE=paper draws the committed reference tables (results/reference/tables, this
# repository's own paper-scale runs) when they exist, without training; TRAIN=1 runs what is
# missing of the grid here first and draws your own runs. SCALE=paper_cpu: the subset of the
# paper grid a CPU finishes (configs/scale/paper_cpu.yaml), trained here.
REFERENCE := results/reference/tables
TRAIN ?=
# PCALM_RESULTS naming a folder that holds its own paper-scale table wins over the reference,
# for figures and the report alike (so both always read the same tables).
own_paper_tables = $(if $(PCALM_RESULTS),$(wildcard $(RESULTS)/tables/$(1)-paper.csv))
from_reference = $(and $(filter paper,$(SCALE)),$(if $(TRAIN)$(call own_paper_tables,$(1)),,$(wildcard $(REFERENCE)/$(1)-paper.csv)))

$(FIGURES):  ## figureN: run what is missing, collect, plot → figures/figureN-SCALE.{pdf,png}
	$(if $(call from_reference,$@),@echo "drawing $@ from the committed paper-scale tables in $(REFERENCE) (TRAIN=1: run the grid here)")
	$(if $(call from_reference,$@),$(PY) experiments/plot.py $@ --scale paper --tables $(REFERENCE))
	$(if $(call from_reference,$@),,$(MAKE) sweep EXP=$@ LAUNCHER=$(LAUNCHER))
	$(if $(call from_reference,$@),,$(MAKE) collect EXP=$@)
	$(if $(call from_reference,$@),,scale=$$($(PY) experiments/collect.py --print-scale experiment=$@ scale=$(SCALE) $(ARGS)) && \
	  $(PY) experiments/plot.py $@ --scale "$$scale" --tables $(RESULTS)/tables)
	$(if $(call from_reference,$@),,$(PY) experiments/dashboard.py experiment=$@ scale=$(SCALE) $(ARGS))

figures: $(FIGURES)  ## every figure (figure1 … figure10, figure2_mnist, figure_eta)

# SCALE=paper reports on the committed reference unless TRAIN=1 or PCALM_RESULTS holds your own
# paper-scale tables (the same rule as the figures)
report_from_reference = $(and $(filter paper,$(SCALE)),$(if $(TRAIN)$(call own_paper_tables,*),,$(wildcard $(REFERENCE)/*-paper.csv)))
report:  ## reproduction scorecard → results/report-SCALE.md (SCALE=paper: the reference tables)
	$(PY) experiments/report.py --scale $(SCALE) $(if $(report_from_reference),--tables $(REFERENCE) --out results/report-paper.md,--tables $(RESULTS)/tables --out $(RESULTS)/report-$(SCALE).md)

reference:  ## put EXP's collected tables on record in results/reference/tables (SCALE=paper)
	$(PY) scripts/record_reference.py $(EXP) --scale $(SCALE)

# Offline wandb runs (logger=offline, or WANDB_MODE=offline on nodes without internet) stay in
# each run folder's wandb/ and in $(RESULTS)/dashboard/; wandb-sync first leaves one unsynced
# offline folder per run id (a requeued or retagged run is logged again whole from its folder),
# then uploads those not yet synced.
wandb-log:  ## log EXP's finished runs to wandb after the fact (offline; idempotent; EXP=, SCALE=)
	$(PY) scripts/wandb_log.py experiment=$(EXP) scale=$(SCALE) $(ARGS)

wandb-sync:  ## upload offline wandb runs (run folders + figure summaries), one run per id
	$(PY) scripts/wandb_log.py --consolidate $(RESULTS)
	find $(RESULTS) -maxdepth 5 -type d -path '*/wandb/offline-run-*' -prune -print0 | sort -z | xargs -0 -r $(VENV)/bin/wandb sync --no-include-synced --yes

bench:  ## speed table → results/bench.csv
	$(PY) scripts/bench.py

# Staged, each stage with its own timeout, < 5 min in all; fits a bare GPU machine (python3 +
# torch, no Hydra/wandb: `make gpu-check PY=python3`). Logs and tables → $OUT if set, else
# results/gpu-check (scripts/gpu_check.sh says what each file holds).
gpu-check:  ## on a CUDA machine: real-GPU checks, tests, bench, grid projection → results/gpu-check
	PY=$(PY) bash scripts/gpu_check.sh

clean-results:  ## delete everything in PCALM_RESULTS (results) but reference/: runs, tables, sweeps, logs (asks first)
	@read -p "delete everything in $(RESULTS)/ but reference/? [y/N] " ok && [ "$$ok" = y ] && \
	  find $(RESULTS) -mindepth 1 -maxdepth 1 ! -name reference -exec rm -rf {} + || true
