"""An experiment's wandb summary run: its figure, its collected table, the table as a file.

    python scripts/dashboard.py experiment=figure2 scale=smoke logger=offline [overrides...]

`make figureN` calls this last, with the same overrides as its sweep and collect steps; with
`logger=none` (the default) it does nothing. Otherwise it opens one wandb run per experiment
and scale (id `<experiment>-<scale>-summary`, job_type `figure`, group `<experiment>-<scale>`,
kept under <results_dir>/dashboard/<experiment>-<scale>/wandb/) and logs

- `figure`: figures/<experiment>.png (the plot script's output; `--figure PATH` for another);
- `runs`: results/tables/<experiment>-<scale>.csv as a wandb Table, and that CSV (with the
  per-evaluation `-metrics.csv`) as an artifact `<experiment>-<scale>` of type `table`.

Runs of the grid that were tracked under another experiment (the same cell, so the same run)
get this experiment's tags too: their wandb run is resumed once to add them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pcalm.cli import REPO, exit_with
from pcalm.runs.eta import EtaTableError
from pcalm.runs.folder import RunFolder
from pcalm.runs.tracking import effective_mode, open_summary_run, open_tracker, recorded, run_meta
from pcalm.sweeps.grid import load_sweep

SWEEP_FLAGS = ("--dry-run", "--no-wait")  # sweep.py's; ignored so `make figureN ARGS=` works


def retag(configs: list[dict]) -> int:
    """Add this experiment's tags to grid runs tracked before under another; returns how many."""
    from pcalm.runs.runner import _run_name

    count = 0
    for cfg in configs:
        folder = RunFolder(cfg["results_dir"], cfg)
        before = recorded(folder.path)
        if not before or not folder.exists_complete():
            continue  # never tracked (logger off when it trained), or not finished
        if set(run_meta(cfg)["tags"]) <= set(before.get("tags", [])):
            continue
        open_tracker(cfg["logger"], folder.id, _run_name(cfg), before.get("group"), cfg,
                     folder.path).finish()
        count += 1
    return count


def main(argv: list[str]) -> int:
    figure = None
    if "--figure" in argv:
        i = argv.index("--figure")
        if i + 1 >= len(argv):
            exit_with(ValueError("--figure needs a path (a PNG)"))
        figure, argv = Path(argv[i + 1]), argv[:i] + argv[i + 2:]
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    overrides = [a for a in argv if a not in SWEEP_FLAGS]
    try:
        sweep = load_sweep(overrides)
        logger = sweep.configs[0]["logger"]
        if effective_mode(logger) in ("none", "disabled"):
            return 0
        results = Path(sweep.configs[0]["results_dir"])
        table = results / "tables" / f"{sweep.label}.csv"
        if not table.is_file():
            exit_with(ValueError(f"no table {table}: run `make collect EXP={sweep.name} "
                                 f"SCALE={sweep.scale}` first"))
        figure = figure or REPO / "figures" / f"{sweep.name}.png"
        retagged = retag(sweep.configs)
        tracker = open_summary_run(logger, sweep.name, sweep.scale,
                                   results / "dashboard" / sweep.label,
                                   {"experiment": sweep.name, "scale": sweep.scale,
                                    "runs": len(sweep.configs)})
        with tracker:
            if figure.is_file():
                tracker.log_figure("figure", figure)
            tracker.log_table("runs", table, artifact=sweep.label,
                              extra_files=(table.with_name(f"{sweep.label}-metrics.csv"),))
    except (ValueError, EtaTableError) as err:
        exit_with(err)
    shown = f"{figure.name} and " if figure.is_file() else ""
    again = f"; {retagged} runs of other experiments tagged" if retagged else ""
    print(f"wandb ({effective_mode(logger)}): {shown}{table.name} in run "
          f"{sweep.label}-summary{again}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
