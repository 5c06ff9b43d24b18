"""pcalm: BP, PC and PC-ALM on a muPC residual MLP (Augmented Lagrangian Predictive Coding)."""

from pcalm import diagnostics, results
from pcalm.algorithms import ALGORITHMS, Algorithm, make_algorithm
from pcalm.model import ResidualMLP

__all__ = ["ALGORITHMS", "Algorithm", "ResidualMLP", "diagnostics", "make_algorithm", "results"]
__version__ = "0.1.0"
