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


# Below this many multiply-adds per hidden-layer matmul (B·N², i.e. N < 256 at B = 64) a step
# is a few thousand small kernels: a second thread saves little when the machine is quiet
# and costs up to 100× when it is busy (each parallel region waits for a descheduled thread).
PARALLEL_MIN_MACS = 64 * 256 * 256


def threads_for(cfg: dict, available: int) -> int:
    """torch CPU threads for a run: 1 for small nets, else `available` (module note above)."""
    m, t = cfg["model"], cfg["train"]
    macs = t["batch_size"] * m["width"] ** 2
    return max(1, available) if macs >= PARALLEL_MIN_MACS else 1


def run_threads(cfg: dict, job_threads: int | None) -> int | None:
    """The torch threads a run of a sweep job trains with: its own `train.threads`, else
    `threads_for` the job's share of the cores; None: torch's default (a job whose share
    is unknown, e.g. SLURM without cpus_per_task). The job and its projection both ask here."""
    return cfg["train"].get("threads") or (job_threads and threads_for(cfg, job_threads))
