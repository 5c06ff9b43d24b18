"""Draw one figure from its collected table: figures/<figure>-<scale>.{pdf,png}.

    python experiments/plot.py figure2 --scale smoke [--tables DIR] [--out PATH]

FIGURE is one of figure1 … figure10, figure2_mnist, figure_eta (`make figureN` runs what is
missing, collects and then calls this). --scale picks the table
(<tables>/<figure>-<scale>.csv, default tables: <PCALM_RESULTS or results>/tables) and names
the figure; a table of an experiment with a changed setting is `--scale smoke-<setting>`, as
`experiments/collect.py --print-scale` prints it. --out: another figure path, without suffix,
in an existing folder. Plots read tables only (pcalm.plots), never train and never import torch.
"""

from __future__ import annotations

from pcalm import entry  # first: a Ctrl-C while the rest imports is one line
import argparse
import sys
from pathlib import Path

from pcalm.plots import FIGURES, draw


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=list(FIGURES), metavar="FIGURE",
                        help=f"{' | '.join(FIGURES)}")
    parser.add_argument("--scale", default="smoke",
                        help="smoke | paper | paper_cpu [-<variant>] (default: smoke)")
    parser.add_argument("--tables", type=Path, default=None,
                        help="collected tables folder (default: <PCALM_RESULTS or results>/tables)")
    parser.add_argument("--out", type=Path, default=None,
                        help="figure path without suffix, in an existing folder")
    args = parser.parse_args(argv)
    try:
        png = draw(args.figure, args.scale, args.tables, args.out)
    except ValueError as err:  # TableError included: one line naming the file and the value
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: cannot write the figure: {err.strerror or err} ({err.filename})",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: {args.figure}; no figure written, the previous one is unchanged",
              file=sys.stderr)
        return 130
    print(f"wrote {png.with_suffix('.pdf')} and .png")
    return 0


if __name__ == "__main__":
    entry.prepare(__file__)  # this checkout's pcalm
    sys.exit(main(sys.argv[1:]))
