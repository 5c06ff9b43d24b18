"""pcalm: BP, PC and PC-ALM on a muPC residual MLP (Augmented Lagrangian Predictive Coding)."""

from pcalm import diagnostics, results
from pcalm.algorithms import ALGORITHMS, Algorithm, make_algorithm, stack_algorithms
from pcalm.model import ResidualMLP

__all__ = ["ALGORITHMS", "Algorithm", "ResidualMLP", "diagnostics", "make_algorithm", "results",
           "stack_algorithms"]
__version__ = "0.1.0"
