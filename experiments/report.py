"""Reproduction scorecard: each claim of the paper, its rule, the numbers, the verdict.

    python experiments/report.py --scale smoke [--tables DIR] [--out PATH]     (make report)

Reads only collected tables (<tables>/<experiment>-<scale>.csv, written by `make figureN`;
default tables: <PCALM_RESULTS or results>/tables); writes <tables>/../report-<scale>.md (or
--out, in an existing folder) and prints it. The rules and the claims live in pcalm/analysis
(stats.py, grid.py, claims.py, scorecard.py; README "How the report decides a claim"); a claim
whose table is missing says what is missing and the command that makes it.
"""

from __future__ import annotations

from pcalm import entry  # first: a Ctrl-C while the rest imports is one line
import argparse
import sys
from pathlib import Path

from pcalm.analysis.scorecard import write_report
from pcalm.analysis.tables import default_tables_dir

SCALES = ("smoke", "paper", "paper_cpu")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="smoke", choices=SCALES)
    parser.add_argument("--tables", type=Path, default=default_tables_dir(),
                        help="collected tables folder (default: <PCALM_RESULTS or results>/tables)")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown path (default: <tables>/../report-<scale>.md)")
    args = parser.parse_args(argv)
    try:
        text, out = write_report(args.tables, args.scale, args.out)
    except (ValueError, OSError) as err:  # TableError, ReportNotWritten: one line each
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: no report written, the previous one is unchanged", file=sys.stderr)
        return 130
    print(text)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    entry.prepare(__file__)  # this checkout's pcalm
    sys.exit(main(sys.argv[1:]))
