"""The words configs, run tables, figures and the report share, written once (no torch).

A config says `model.activation=linear` or `identity`; a table may hold either; a figure
labels the same net "linear". The math (`pcalm.core.model`), the η tables
(`pcalm.runs.eta`), the statistics (`pcalm.analysis`) and the plots read these names here,
so that an alias or a label cannot mean one thing in one place and another elsewhere.
"""

from __future__ import annotations

ACTIVATION_NAMES = ("identity", "tanh", "relu")  # canonical, in the paper's order
ACTIVATION_ALIASES = {"linear": "identity"}  # what users may also write
ACTIVATION_LABELS = {"identity": "linear", "tanh": "tanh", "relu": "ReLU"}  # on figures

ALGORITHM_NAMES = ("bp", "pc", "pcalm")
INFERENCE_ALGORITHMS = ("pc", "pcalm")  # the two with an inference loop
ALGORITHM_LABELS = {"bp": "BP", "pc": "PC", "pcalm": "PC-ALM"}

# A cell of the width × depth grid, as columns of a run table.
CELL_KEY = ["model.activation", "model.width", "model.depth"]

# The verdicts of the report's rules (pcalm.analysis.stats / claims).
HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"
NO_VALID_RUNS = "no valid runs"


def canonical_activation(name: str) -> str:
    """`linear` → `identity`; every other name as it is (validation is the caller's)."""
    return ACTIVATION_ALIASES.get(name, name)
