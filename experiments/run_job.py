"""One sweep job: train its share of a sweep's runs, listed in the sweep's manifest.

experiments/sweep.py launches this as a Hydra multirun over the job index (configs/job.yaml,
hydra/launcher=local|slurm|basic: pcalm/sweeps/launchers.py). Each job runs
pcalm/sweeps/job.py; a local one also stops with its sweep (pcalm/sweeps/processes.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

# The submitting process needs neither torch nor most of the package: pcalm.cli would
# import both, so the config folder is found from here.
REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "configs"
# Hydra finds launcher plugins by scanning sys.path for hydra_plugins/, and an editable
# install is not scanned: let it see this checkout's (hydra_plugins/pcalm_launcher).
sys.path.insert(1, str(REPO))

from pcalm.sweeps.job import log, run_job  # noqa: E402
from pcalm.sweeps.processes import stop_with_the_sweep  # noqa: E402


@hydra.main(config_path=str(CONFIG_DIR), config_name="job", version_base="1.3")
def main(cfg: DictConfig) -> None:
    stop_with_the_sweep(say=log.info)
    run_job(cfg.manifest, int(cfg.job))


if __name__ == "__main__":
    main()
