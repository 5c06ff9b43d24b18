"""Speed table for the hot path → stdout and results/bench.csv (`make bench`).

    python scripts/bench.py                        # the target cell + projection, ~2–3 min (CPU)
    python scripts/bench.py --widths 32 128 --depths 32 128 --models 1,2,4,8,16
    python scripts/bench.py --device cuda --full   # every Fig. 2 cell at T = 2L

What each column means, and the options: pcalm/sweeps/bench.py (`--help`).
"""

from pcalm.sweeps.bench import main

if __name__ == "__main__":
    main()
