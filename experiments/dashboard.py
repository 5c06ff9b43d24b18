"""An experiment's wandb summary run: its figure, its collected table, the table as a file.

    python experiments/dashboard.py experiment=figure2 scale=smoke logger=offline [overrides...]

`make figureN` calls this last, with the same overrides as its sweep and collect steps; with
`logger=none` (the default) it does nothing. Otherwise it opens one wandb run per experiment
and scale (id `<experiment>-<scale>-summary`, job_type `figure`, group `<experiment>-<scale>`,
kept under <results_dir>/dashboard/<experiment>-<scale>/wandb/) and logs

- `figure`: figures/<experiment>-<scale>.png (experiments/plot.py's output; `--figure PATH`
  for another);
- `runs`: results/tables/<experiment>-<scale>.csv as a wandb Table, and that CSV (with the
  per-evaluation `-metrics.csv`) as an artifact `<experiment>-<scale>` of type `table`;
- in its config and summary: `runs` (finished runs in the table) and `runs_in_wandb` (how many
  of them are wholly in wandb); it prints both, and `make wandb-log` logs the others.

An override that changes the experiment (`data.train_size=600`) names the table, the figure
and the summary run after it, as `experiments/collect.py` does (`<experiment>-<scale>-<setting>`).

Runs of the grid that were tracked under another experiment (the same cell, so the same run)
get this experiment's tags too: their wandb run is resumed once to add them.
"""

from __future__ import annotations

from pcalm import entry  # first: a Ctrl-C while the rest imports is one line
import sys
from pathlib import Path

from pcalm.cli import exit_with
from pcalm.runs.eta import EtaTableError
from pcalm.runs.wandb_log import log_figure_summary
from pcalm.sweeps.grid import table_scope

SWEEP_FLAGS = ("--dry-run", "--no-wait")  # sweep.py's; ignored so `make figureN ARGS=` works


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
    try:
        line = log_figure_summary(table_scope([a for a in argv if a not in SWEEP_FLAGS]), figure)
    except (ValueError, EtaTableError) as err:
        exit_with(err)
    if line:
        print(line)
    return 0


if __name__ == "__main__":
    entry.prepare(__file__)  # this checkout's pcalm
    sys.exit(main(sys.argv[1:]))
