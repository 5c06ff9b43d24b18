"""One sweep job: train its share of a sweep's runs, listed in the sweep's manifest.

experiments/sweep.py launches this as a Hydra multirun over the job index (configs/job.yaml,
hydra/launcher=local|slurm|basic: pcalm/sweeps/launchers.py). Each job runs
pcalm/sweeps/job.py; a local one also stops with its sweep (pcalm/sweeps/processes.py).
"""

from __future__ import annotations

from pcalm import entry  # first: a Ctrl-C while the rest imports is one line
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pcalm.sweeps.job import exit_quietly_on_a_full_disk, log, run_job
from pcalm.sweeps.processes import stop_with_the_sweep

# The submitting process needs neither torch nor most of the package: pcalm.cli would
# import both, so the config folder is found from here.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@hydra.main(config_path=str(CONFIG_DIR), config_name="job", version_base="1.3")
def main(cfg: DictConfig) -> None:
    stop_with_the_sweep(say=log.info)
    run_job(cfg.manifest, int(cfg.job))


if __name__ == "__main__":
    entry.prepare(__file__, launcher=True)  # own checkout; Hydra knows our SLURM launcher
    exit_quietly_on_a_full_disk(main)  # the sweep says it in one line
