"""pcalm's SLURM launcher for Hydra: hydra-submitit-launcher's, submitting and waiting as
pcalm/sweeps/submitit_launcher.py says. Hydra takes launcher plugins only from the
`hydra_plugins` package; this module stays small because Hydra imports every plugin at start-up."""

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class SweepSlurmLauncher(SlurmLauncher):
    """configs/hydra/launcher/slurm.yaml's `_target_`. The jobs run the upstream code
    (`__call__`, and `checkpoint`, which resubmits a preempted or timed-out job)."""

    def launch(self, job_overrides, initial_job_idx):
        from pcalm.sweeps.submitit_launcher import launch

        return launch(self, job_overrides, initial_job_idx)
