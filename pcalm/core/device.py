"""Devices and dtypes a run may ask for (`train.device`, `train.dtype`), and where it trains."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """auto (CUDA when present, else CPU), cpu or cuda; a bad value is a one-line ValueError
    naming `option`."""
    if name not in DEVICES:
        raise ValueError(f"bad value {option}={name!r}: allowed: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"bad value {option}='cuda': no CUDA device here; allowed: auto, cpu")
    return torch.device(name)
