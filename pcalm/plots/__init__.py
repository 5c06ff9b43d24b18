"""Tables → figures (matplotlib; never torch): one module per figure family.

``FIGURES`` maps every figure name to the module that draws it; a twin figure is an entry,
not a file: figure2_mnist is drawn by figure2's module, figure7 by figure6's, figure9 by
figure8's, each from its own table (``results/tables/<name>-<scale>.csv``, whose rows carry
the data set). ``draw(name, scale, tables, out)`` draws one; ``plotting_function(name)`` gives
its function ``plot(experiment, scale, tables, out) -> PNG path``.

Nothing is imported here until a figure is asked for (matplotlib and pandas take a second).
"""

from __future__ import annotations

import importlib

FIGURES = {
    "figure1": "figure1",
    "figure2": "figure2",
    "figure2_mnist": "figure2",  # MNIST twin of figure2
    "figure3": "figure3",
    "figure4": "figure4",
    "figure5": "figure5",
    "figure6": "figure6",
    "figure7": "figure6",  # MNIST twin of figure6
    "figure8": "figure8",
    "figure9": "figure8",  # MNIST twin of figure8
    "figure10": "figure10",
    "figure_eta": "figure_eta",
}


def plotting_function(name: str):
    """The function that draws figure `name`; ValueError (one line) for an unknown name."""
    if name not in FIGURES:
        raise ValueError(f"bad figure {name!r}: allowed: {', '.join(FIGURES)}")
    return importlib.import_module(f"pcalm.plots.{FIGURES[name]}").plot


def draw(name: str, scale: str, tables=None, out=None):
    """Draw figure `name` from `<tables>/<name>-<scale>.csv` (default tables:
    `<PCALM_RESULTS or results>/tables`) into figures/<name>-<scale>.{pdf,
    png} (or `out`.{pdf,png}); returns the PNG path. A damaged or missing table is a one-line
    pcalm.analysis.grid.TableError, a bad scale or `out` a one-line ValueError."""
    from pcalm.plots.style import check_out, check_scale, default_tables

    plot = plotting_function(name)
    return plot(name, check_scale(scale), tables or default_tables(), check_out(out))
