"""One config = one run = one folder under results/runs/<run_id>/.

    python experiments/run.py algo=pcalm model.width=32 model.depth=16 data=fashion_mnist

Every key of configs/ is an override (`algo=bp|pc|pcalm`, `model.activation=tanh`,
`train.seed=1`, `logger=offline`, ...). A run whose folder already holds summary.json is
skipped. Sweeps and figures: `make sweep EXP=figure2`, `make figure2` (experiments/sweep.py);
`-m experiment=figureN` names the grid and that command instead of launching one cell.
`--help` lists the config groups and the make targets; tab completion:
`eval "$(python experiments/run.py -sc install=bash)"`.
"""

from __future__ import annotations

from pcalm import entry  # first: a Ctrl-C while the rest imports is one line
import sys

import hydra
from omegaconf import DictConfig

from pcalm.cli import CONFIG_DIR, check_overrides, exit_with, interrupted, run_config
from pcalm.data import DataError
from pcalm.runs.config import Cell
from pcalm.runs.eta import EtaTableError
from pcalm.runs.folder import RunFolder, check_results_dir
from pcalm.runs.runner import execute
from pcalm.sweeps.grid import multirun_refusal


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run = None
    try:
        run = run_config(cfg)
        check_results_dir(run["results_dir"])
        threads = run["train"]["threads"]
        if threads:
            import torch

            torch.set_num_threads(threads)
        say_plan(run)
        outcome = execute([run])
    except (ValueError, DataError, EtaTableError) as err:
        exit_with(err)
    except OSError as err:  # a full or vanished disk: nothing half-written stays (atomic writes)
        exit_with(OSError(f"cannot write the run's files: {err.strerror or err} "
                          f"({err.filename or run and run['results_dir']}); finished runs are "
                          "kept, run the same command again once there is room"))
    except KeyboardInterrupt:
        where = RunFolder(run["results_dir"], run).path if run else None
        interrupted(f"run {Cell.of(run)} ({where})" if run else "the run, before it started")
    if outcome.skipped:
        path = RunFolder(run["results_dir"], run).path
        print(f"already complete: {path} (delete it to re-run)")


def say_plan(run: dict) -> None:
    """Before a run that is not yet complete starts: what it will compute and cost (a width
    or depth typed one digit too long shows here, not hours later)."""
    if RunFolder(run["results_dir"], run).exists_complete():
        return
    import torch

    from pcalm.core.device import resolve_device
    from pcalm.sweeps.cost import CostModel, model_path, plan_line

    device = resolve_device(run["train"]["device"])
    threads = run["train"]["threads"] or torch.get_num_threads()
    print(plan_line(run, CostModel.load(model_path(run["results_dir"], device, threads))),
          flush=True)


def refuse_experiment_multirun(argv: list[str]) -> None:
    """`-m experiment=figureN`: one line naming the grid and the command that runs it."""
    try:
        line = multirun_refusal(argv)
    except ValueError as err:
        exit_with(err)
    if line:
        exit_with(ValueError(line))


if __name__ == "__main__":
    entry.prepare(__file__, launcher=True)  # own checkout; Hydra knows our SLURM launcher
    try:
        refuse_experiment_multirun(sys.argv[1:])
        check_overrides(sys.argv[1:])
        main()
    except KeyboardInterrupt:
        interrupted("the run, before it started")
