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
import sys
from pathlib import Path

from pcalm.analysis.grid import TableError
from pcalm.analysis.scorecard import build
from pcalm.atomic import atomic_write_text

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="smoke", choices=("smoke", "paper", "paper_cpu"))
    parser.add_argument("--tables", type=Path, default=REPO / "results" / "tables")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown path (default: <tables>/../report-<scale>.md)")
    args = parser.parse_args()
    out = args.out or args.tables.parent / f"report-{args.scale}.md"
    if not out.parent.is_dir():
        sys.exit(f"error: bad value --out={str(out)!r}: its folder does not exist; "
                 "allowed: a path in an existing folder")
    try:
        text = build(args.tables, args.scale)
        atomic_write_text(out, text + "\n")
    except TableError as err:
        sys.exit(f"error: {err}")
    except OSError as err:
        sys.exit(f"error: cannot write {out}: {err.strerror or err}")
    except KeyboardInterrupt:
        sys.exit("interrupted: no report written")
    print(text)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
