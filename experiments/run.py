"""One config = one run = one folder under results/runs/<run_id>/.

    python experiments/run.py algo=pcalm model.width=32 model.depth=16 data=fashion_mnist

Every key of configs/ is an override (`algo=bp|pc|pcalm`, `model.activation=tanh`,
`train.seed=1`, `logger=offline`, ...). A run whose folder already holds summary.json is
skipped. Sweeps: experiments/sweep.py (or `make sweep`).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from pcalm.cli import CONFIG_DIR, check_overrides, exit_with, run_config
from pcalm.data import DataError
from pcalm.eta import EtaTableError
from pcalm.runner import execute


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run = run_config(cfg)
        threads = run["train"]["threads"]
        if threads:
            import torch

            torch.set_num_threads(threads)
        outcome = execute([run])
    except (ValueError, DataError, EtaTableError) as err:
        exit_with(err)
    if outcome.skipped:
        print(f"already complete: results/runs/{outcome.skipped[0]} (delete it to re-run)")


if __name__ == "__main__":
    check_overrides(sys.argv[1:])
    main()
