"""pcalm: BP, PC and PC-ALM on a muPC residual MLP (Augmented Lagrangian Predictive Coding).

The public face, imported lazily (PEP 562 module ``__getattr__``): ``import pcalm`` loads nothing,
and ``pcalm.make_algorithm`` imports the module that defines it on first use. So reading tables
and drawing figures (``pcalm.analysis``, ``pcalm.plots``) never pays for importing torch.
"""

from __future__ import annotations

import importlib

# public name → the module that defines it (a name equal to its module's last part is the module)
_PUBLIC = {
    "ALGORITHMS": "pcalm.core.algorithms",
    "Algorithm": "pcalm.core.algorithms",
    "make_algorithm": "pcalm.core.algorithms",
    "stack_algorithms": "pcalm.core.algorithms",
    "ResidualMLP": "pcalm.core.model",
    "diagnostics": "pcalm.core.diagnostics",
}

__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'pcalm' has no attribute {name!r}")
    module = importlib.import_module(_PUBLIC[name])
    value = module if _PUBLIC[name].rsplit(".", 1)[-1] == name else getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
