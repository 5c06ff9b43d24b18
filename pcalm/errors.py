"""The error a bad configuration value raises, below every module that checks one."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the key and what is allowed."""
