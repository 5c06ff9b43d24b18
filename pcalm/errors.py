"""The error a bad configuration value raises, below every module that checks one."""

from __future__ import annotations

import math


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the key and what is allowed."""


# The one pair of value rules every validator applies (config keys, sweep settings, task
# parameters, algorithm and model options); each caller words its own one-line error.
def is_int_at_least(value, minimum: int) -> bool:
    """An int (not a bool: YAML's `true` is not 1) of at least `minimum`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_finite_number(value) -> bool:
    """An int or float (not a bool), neither NaN nor ±inf."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
