"""One config = one run = one folder under results/runs/<run_id>/.

    python experiments/run.py algo=pcalm model.width=32 model.depth=16 data=fashion_mnist

Every key of configs/ is an override (`algo=bp|pc|pcalm`, `model.activation=tanh`,
`train.seed=1`, `logger=offline`, ...). A run whose folder already holds summary.json is
skipped. Sweeps: experiments/sweep.py (or `make sweep`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

# Hydra finds launcher plugins by scanning sys.path for hydra_plugins/, and an editable
# install is not scanned: let it see this checkout's (hydra_plugins/pcalm_launcher).
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from pcalm.cli import CONFIG_DIR, check_overrides, exit_with, interrupted, run_config  # noqa: E402
from pcalm.data import DataError  # noqa: E402
from pcalm.runs.config import Cell  # noqa: E402
from pcalm.runs.eta import EtaTableError  # noqa: E402
from pcalm.runs.folder import RunFolder, check_results_dir  # noqa: E402
from pcalm.runs.runner import execute  # noqa: E402


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
        outcome = execute([run])
    except (ValueError, DataError, EtaTableError) as err:
        exit_with(err)
    except KeyboardInterrupt:
        where = RunFolder(run["results_dir"], run).path if run else None
        interrupted(f"run {Cell.of(run)} ({where})" if run else "the run, before it started")
    if outcome.skipped:
        path = RunFolder(run["results_dir"], run).path
        print(f"already complete: {path} (delete it to re-run)")


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:])
        main()
    except KeyboardInterrupt:
        interrupted("the run, before it started")
