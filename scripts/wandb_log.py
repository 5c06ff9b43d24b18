"""Log an experiment's finished runs to wandb after the fact (offline unless told otherwise).

    python scripts/wandb_log.py experiment=figure2 scale=smoke [overrides...]
    python scripts/wandb_log.py --consolidate [RESULTS_DIR]

The first form takes the runs of the experiment's table (the same runs `make collect` gathers)
and logs each finished one that is not yet wholly in wandb: its metrics.csv as the history
(each evaluation once, at its step), its summary.json as the summary, under the run id as the
wandb run id, in the run folder's wandb/. Runs trained with a logger are already there and are
skipped, so running it twice logs nothing twice. The mode is the runs' `logger=` (offline when
it is `none`; `logger=online` or WANDB_MODE=online to log straight to the server); upload
offline runs with `make wandb-sync`.

`--consolidate` (run by `make wandb-sync` first) leaves one unsynced offline folder per run id,
so that a sync gives one clean wandb run per id (pcalm/runs/wandb_log.py says why).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pcalm.cli import exit_with
from pcalm.runs.eta import EtaTableError
from pcalm.runs.folder import RunFolder
from pcalm.runs.tracking import TrackingError, effective_mode
from pcalm.runs.wandb_log import consolidate, log_finished_run
from pcalm.sweeps.grid import table_scope

SWEEP_FLAGS = ("--dry-run", "--no-wait")  # sweep.py's; ignored so `make ... ARGS=` works


def log_experiment(overrides: list[str]) -> str:
    """Log the experiment's finished runs; returns the line to print."""
    scope = table_scope(overrides)
    counts = {"logged": 0, "already": 0, "incomplete": 0}
    logger = dict(scope.configs[0]["logger"])
    if logger.get("mode", "none") == "none":
        logger["mode"] = "offline"
    for cfg in scope.configs:
        folder = RunFolder(cfg["results_dir"], cfg)
        counts[log_finished_run(folder, logger_cfg=logger)] += 1
    mode = effective_mode(logger)
    upload = "; `make wandb-sync` uploads them" if mode == "offline" and counts["logged"] else ""
    return (f"wandb ({mode}) {scope.label}: {counts['logged']} runs logged, "
            f"{counts['already']} already in wandb, {counts['incomplete']} not finished "
            f"(of {len(scope.configs)}){upload}")


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    try:
        if argv[:1] == ["--consolidate"]:
            results = Path(argv[1] if len(argv) > 1 else "results")
            relogged, superseded = consolidate(results)
            print(f"wandb: {relogged} runs re-logged whole, {superseded} older summary-run "
                  f"folders set aside (one offline folder per run id in {results})")
            return 0
        print(log_experiment([a for a in argv if a not in SWEEP_FLAGS]))
    except (ValueError, EtaTableError, TrackingError, ImportError) as err:
        exit_with(err)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
