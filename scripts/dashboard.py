"""An experiment's wandb summary run: its figure, its collected table, the table as a file.

    python scripts/dashboard.py experiment=figure2 scale=smoke logger=offline [overrides...]

`make figureN` calls this last, with the same overrides as its sweep and collect steps; with
`logger=none` (the default) it does nothing. Otherwise it opens one wandb run per experiment
and scale (id `<experiment>-<scale>-summary`, job_type `figure`, group `<experiment>-<scale>`,
kept under <results_dir>/dashboard/<experiment>-<scale>/wandb/) and logs

- `figure`: figures/<experiment>-<scale>.png (the plot script's output; `--figure PATH` for
  another);
- `runs`: results/tables/<experiment>-<scale>.csv as a wandb Table, and that CSV (with the
  per-evaluation `-metrics.csv`) as an artifact `<experiment>-<scale>` of type `table`;
- in its config and summary: `runs` (finished runs in the table) and `runs_in_wandb` (how many
  of them are wholly in wandb); it prints both, and `make wandb-log` logs the others.

An override that changes the experiment (`data.train_size=600`) names the table, the figure
and the summary run after it, as `scripts/collect.py` does (`<experiment>-<scale>-<setting>`).

Runs of the grid that were tracked under another experiment (the same cell, so the same run)
get this experiment's tags too: their wandb run is resumed once to add them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pcalm.cli import REPO, exit_with
from pcalm.runs.eta import EtaTableError
from pcalm.runs.folder import RunFolder
from pcalm.runs.tracking import (
    effective_mode,
    open_summary_run,
    open_tracker,
    recorded,
    run_meta,
    summary_run_id,
)
from pcalm.runs.wandb_log import in_wandb, supersede, unsynced_folders
from pcalm.sweeps.grid import table_scope

SWEEP_FLAGS = ("--dry-run", "--no-wait")  # sweep.py's; ignored so `make figureN ARGS=` works


def retag(configs: list[dict]) -> int:
    """Add this experiment's tags to grid runs tracked before under another; returns how many."""
    from pcalm.runs.runner import run_name

    count = 0
    for cfg in configs:
        folder = RunFolder(cfg["results_dir"], cfg)
        before = recorded(folder.path)
        if not before or not folder.exists_complete():
            continue  # never tracked (logger off when it trained), or not finished
        if set(run_meta(cfg)["tags"]) <= set(before.get("tags", [])):
            continue
        open_tracker(cfg["logger"], folder.id, run_name(cfg), before.get("group"), cfg,
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
        scope = table_scope(overrides)
        logger = scope.configs[0]["logger"]
        if effective_mode(logger) in ("none", "disabled"):
            return 0
        results = Path(scope.configs[0]["results_dir"])
        table = results / "tables" / f"{scope.label}.csv"
        if not table.is_file():
            exit_with(ValueError(f"no table {table}: run `make collect EXP={scope.name} "
                                 f"SCALE={scope.scale}` first"))
        figure = figure or REPO / "figures" / f"{scope.label}.png"
        retagged = retag(scope.configs)
        finished = [f for f in (RunFolder(c["results_dir"], c) for c in scope.configs)
                    if f.exists_complete()]
        tracked = sum(in_wandb(f.path) for f in finished)
        counts = {"runs": len(finished), "runs_in_wandb": tracked}
        tracker = open_summary_run(logger, scope.name, scope.scale_label,
                                   results / "dashboard" / scope.label,
                                   {"experiment": scope.name, "scale": scope.scale,
                                    "variant": scope.variant, **counts})
        with tracker:
            if figure.is_file():
                tracker.log_figure("figure", figure)
            tracker.log_table("runs", table, artifact=scope.label,
                              extra_files=(table.with_name(f"{scope.label}-metrics.csv"),))
            tracker.note(counts)
        # each summary run is logged whole: older unsynced copies would only replay into it
        wandb_dir = results / "dashboard" / scope.label / "wandb"
        rid = summary_run_id(scope.name, scope.scale_label)
        newest = unsynced_folders(wandb_dir, rid)[-1:]
        if newest:
            supersede(wandb_dir, rid, newest[0])
    except (ValueError, EtaTableError) as err:
        exit_with(err)
    shown = f"{figure.name} and " if figure.is_file() else ""
    again = f"; {retagged} runs of other experiments tagged" if retagged else ""
    missing = len(finished) - tracked
    rest = (f"; {missing} have no wandb history yet: `make wandb-log EXP={scope.name} "
            f"SCALE={scope.scale}` logs them") if missing else ""
    print(f"wandb ({effective_mode(logger)}): {shown}{table.name} in run "
          f"{scope.label}-summary, covering {len(finished)} runs of which {tracked} are in "
          f"wandb{again}{rest}")
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
