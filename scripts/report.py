"""Reproduction scorecard: each claim of the paper, its rule, the numbers, the verdict.

    python scripts/report.py --scale smoke [--tables DIR] [--out PATH]     (make report)

Reads only collected tables (results/tables/<experiment>-<scale>.csv, written by `make
figureN`); writes results/report-<scale>.md (or --out) and prints it. The rules and the claims
live in pcalm/analysis (stats.py, grid.py, claims.py, scorecard.py; README "How the report
decides a claim"); a claim whose table is missing says what is missing and the command that
makes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pcalm.analysis.scorecard import build
from pcalm.results import atomic_write_text

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="smoke", choices=("smoke", "paper", "paper_cpu"))
    parser.add_argument("--tables", type=Path, default=REPO / "results" / "tables")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown path (default: <tables>/../report-<scale>.md)")
    args = parser.parse_args()
    text = build(args.tables, args.scale)
    out = args.out or args.tables.parent / f"report-{args.scale}.md"
    atomic_write_text(out, text + "\n")
    print(text)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
