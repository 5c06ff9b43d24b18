"""Config → objects: a run's net, algorithm and first batch, and which runs train as a stack.

The one place a validated run config (`pcalm.runs.config`) becomes torch objects. The
training loop (`runs/train.py`), the figure tasks (`runs/tasks/figures.py`), the runner and
the sweep planner all build through here, so a figure task's net is the training run's net
and a sweep groups runs exactly as the loop will stack them.

A *stack* is M runs trained at once by one loop (a leading model dimension on every tensor;
model m's numbers equal a lone run's). Runs stack when their configs agree in everything but
what a stack holds per model: the seed and Adam's η0 here, and the algorithm options that
`pcalm.core.algorithms` states (PER_MODEL_OPTIONS, SHARED_BY_A_STACK).
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from pcalm.core.algorithms import PER_MODEL_OPTIONS, Algorithm, make_algorithm, stack_form
from pcalm.core.device import DTYPES
from pcalm.core.model import ResidualMLP
from pcalm.data import Dataset, epoch_order

# What the models of one stack may differ in besides the algorithm options: the seed and
# Adam's η0 (pcalm.core.optim.StackedAdam holds one per model).
PER_MODEL_TRAIN_KEYS = ("seed", "eta0")
# Keys that name a run or say where it goes, not what it computes.
NOT_COMPUTED = ("train", "algo", "name", "logger", "results_dir")

# `sweep.max_stack=auto` on a GPU: every stackable run of a cell (up to this) in one stack.
# A model at N = 128, L = 64 with B = 64 holds ~0.1 GB (inference buffers ~30 MB, scaled
# weight copies ~17 MB, parameters, gradients and Adam moments ~35 MB), so 64 need ~6 GB.
AUTO_GPU_STACK = 64


def net(cfg: dict, input_dim: int, output_dim: int, seeds: int | list[int], device,
        dtype: torch.dtype | None = None) -> ResidualMLP:
    """The run's muPC residual MLP (`model.*`); a list of seeds gives a stack of models,
    model m initialised as the lone run of seed m. dtype: `train.dtype` unless given."""
    m = cfg["model"]
    return ResidualMLP(
        input_dim, m["width"], m["depth"], output_dim=output_dim, activation=m["activation"],
        param=m["param"], gamma0=m["gamma0"], seed=seeds,
        dtype=dtype or DTYPES[cfg["train"]["dtype"]], device=device,
    )


def algorithm(cfg: dict, **changes) -> Algorithm:
    """The run's algorithm (`algo.*`), with `changes` applied (e.g. another budget)."""
    options = {k: v for k, v in cfg["algo"].items() if k != "name"} | changes
    return make_algorithm(cfg["algo"]["name"], **options)


def first_batch(cfg: dict, dataset: Dataset, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's first training batch (the seed's epoch-0 order), targets one-hot."""
    order = epoch_order(len(dataset.x_train), cfg["train"]["seed"])[: cfg["train"]["batch_size"]]
    x = dataset.x_train[order].to(device=device, dtype=dtype)
    y = F.one_hot(dataset.y_train[order], dataset.num_classes).to(device=device, dtype=dtype)
    return x, y


def stack_key(cfg: dict) -> str:
    """Configs with equal keys can train as one stack: they agree in everything but what a
    stack's models may differ in (PER_MODEL_TRAIN_KEYS and the algorithm's per-model
    options; PC beside PC-ALM included)."""
    rest = {k: v for k, v in cfg.items() if k not in NOT_COMPUTED}
    train = {k: v for k, v in cfg["train"].items() if k not in PER_MODEL_TRAIN_KEYS}
    options = {k: v for k, v in cfg["algo"].items()
               if k != "name" and k not in PER_MODEL_OPTIONS}
    algo = stack_form(cfg["algo"]["name"], options)
    return json.dumps({"rest": rest, "train": train, "algo": algo}, sort_keys=True, default=str)


def stack_size(max_stack: int | str, device_type: str | None) -> int:
    """`sweep.max_stack` as a number of models, for runs on `device_type`.

    auto: every stackable run of a cell (up to AUTO_GPU_STACK) in one stack on a GPU, where
    small nets are bound by kernel launches and M models cost about what one does; 1 on a
    CPU, where stacking measured at most 1.2x (`make bench`) and the local launcher already
    gives every core its own job. None as `device_type` (planning jobs before knowing their
    device): as on a GPU, so that stack-mates land in one job.
    """
    if max_stack != "auto":
        return max(1, int(max_stack))
    return 1 if device_type == "cpu" else AUTO_GPU_STACK


def stack_units(configs: list[dict], max_stack: int | str = 1,
                device_type: str | None = None) -> list[list[dict]]:
    """The runs that train together (equal `stack_key`), in chunks of `max_stack` models,
    in the order their first members appear."""
    groups: dict[str, list[dict]] = {}
    for cfg in configs:
        groups.setdefault(stack_key(cfg), []).append(cfg)
    step = stack_size(max_stack, device_type)
    return [g[i : i + step] for g in groups.values() for i in range(0, len(g), step)]
