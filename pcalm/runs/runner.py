"""Execute resolved run configs: skip finished runs, train the rest, write their folders.

This is the one place that joins a config to its run folder, its data, its tracker and the
trainer, so the single-run entry point, sweep jobs and tests all go through it.
Configs equal but for the seed can train as one stack (`max_stack` > 1) — one process,
one set of batched matmuls for all of them.

A run trains only under its lock (pcalm.runs.folder.RunLock), and is checked for completeness
again once the lock is held: two processes given the same run (two sweeps, a sweep and a
single run) train it once; the other skips it, or waits for it (`wait=True`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pcalm.atomic import atomic_save_arrays
from pcalm.core.device import resolve_device
from pcalm.data import IMAGE_DATASETS, DataError, Dataset, files_checksum, load_dataset
from pcalm.download import fetch
from pcalm.runs import provenance
from pcalm.runs.build import stack_units
from pcalm.runs.config import Cell
from pcalm.runs.folder import ARRAYS_FILE, RunFolder, RunLock
from pcalm.runs.tasks.registry import TASKS
from pcalm.runs.tracking import open_tracker
from pcalm.runs.train import Trainer

# Subsets are drawn with a fixed seed: a smoke-scale subset is part of the dataset's
# definition, so seeds vary only the init and the data order (as with the full data).
SUBSET_SEED = 0


@dataclass
class Outcome:
    """What happened to each requested run."""

    trained: list[dict]
    skipped: list[str]
    busy: list[dict] = field(default_factory=list)  # configs another process is training

    def __str__(self) -> str:
        busy = f", {len(self.busy)} being trained elsewhere" if self.busy else ""
        return (f"{len(self.trained)} trained, {len(self.skipped)} already complete "
                f"(skipped){busy}")


def _dataset_key(cfg: dict) -> tuple:
    d = cfg["data"]
    return (d["name"], d["root"], d["train_size"], d["test_size"], d["verify"],
            d.get("checksum"), cfg["train"]["dtype"])


def load_run_dataset(cfg: dict) -> Dataset:
    """The run's data, downloaded first if missing (official files, so only with `verify`);
    unverified files must still be the ones its id was made from."""
    d = cfg["data"]
    if d["name"] in IMAGE_DATASETS and d["verify"]:
        fetch(d["name"], d["root"], d.get("mirrors", []))  # once per machine; no-op if present
    if d["name"] in IMAGE_DATASETS and not d["verify"]:
        found = files_checksum(d["name"], d["root"])  # DataError naming a missing file
        if found != d.get("checksum"):
            raise DataError(f"the data files under {d['root']} changed since this run was "
                            f"planned (checksum {found}, planned {d.get('checksum')}): "
                            "start the run or sweep again")
    return load_dataset(d["name"], root=d["root"], train_size=d["train_size"],
                        test_size=d["test_size"], seed=SUBSET_SEED, verify=d["verify"])


def execute(
    configs: list[dict],
    *,
    max_stack: int = 1,
    progress: bool = True,
    say: Callable[[str], None] = print,
    wait: bool = True,
) -> Outcome:
    """Train every config whose run folder lacks a valid `summary.json`; returns what was done.

    A run another process holds the lock of is left to the end; then, with `wait`, this one
    waits for it (and skips it if it is complete by then), else it is returned in `busy`.
    """
    pending, skipped, seen = [], [], set()
    for cfg in configs:
        folder = RunFolder(cfg["results_dir"], cfg)
        if folder.path in seen:  # the same run twice (equal after resolution): train it once
            continue
        seen.add(folder.path)
        if folder.exists_complete():
            skipped.append(folder.id)
        else:
            pending.append(cfg)
    datasets: dict[tuple, Dataset] = {}

    def dataset_for(cfg: dict) -> Dataset:
        key = _dataset_key(cfg)
        if key not in datasets:
            datasets[key] = load_run_dataset(cfg)
        return datasets[key]

    def run_unit(unit: list[dict]) -> list[dict]:
        if unit[0]["task"]["name"] != "train":
            cfg = unit[0]
            needs_data = TASKS[cfg["task"]["name"]].needs_data
            return [run_task(cfg, dataset_for(cfg) if needs_data else None, say=say)]
        return train_stack(unit, dataset_for(unit[0]), progress=progress, say=say)

    units = [[c] for c in pending if c["task"]["name"] != "train"]
    units += stack_units([c for c in pending if c["task"]["name"] == "train"], max(1, max_stack))
    trained, deferred, busy = [], [], []
    for unit in units:
        with _locked(unit, blocking=False) as held:
            if held is None:
                deferred.append(unit)
                continue
            trained += _run_incomplete(unit, run_unit, skipped)
    for unit in deferred:
        if not wait:
            busy += unit
            continue
        ids = ", ".join(RunFolder(c["results_dir"], c).id for c in unit)
        say(f"waiting for {ids}: another process is training it")
        with _locked(unit, blocking=True):
            trained += _run_incomplete(unit, run_unit, skipped)
    return Outcome(trained, skipped, busy)


@contextlib.contextmanager
def _locked(unit: list[dict], blocking: bool) -> Iterator[list[RunLock] | None]:
    """Hold the locks of every run of `unit` (taken in id order: no deadlock between two
    processes), or yield None at once if another process holds one and not `blocking`."""
    locks = sorted((RunLock(c["results_dir"], RunFolder(c["results_dir"], c).id) for c in unit),
                   key=lambda lock: str(lock.path))
    try:
        for lock in locks:
            if not lock.acquire(blocking):
                for held in locks:
                    held.release()
                yield None
                return
        yield locks
    finally:
        for lock in locks:
            lock.release()


def _run_incomplete(unit: list[dict], run_unit, skipped: list[str]) -> list[dict]:
    """Under the unit's locks: run what is still incomplete (another process may have
    finished some runs since they were found pending)."""
    todo = []
    for cfg in unit:
        folder = RunFolder(cfg["results_dir"], cfg)
        (skipped.append(folder.id) if folder.exists_complete() else todo.append(cfg))
    return run_unit(todo) if todo else []


def run_task(cfg: dict, dataset: Dataset | None, say: Callable[[str], None] = print) -> dict:
    """Run a diagnostic task (pcalm/runs/tasks/registry.py): arrays.npz, then summary.json last."""
    folder = RunFolder(cfg["results_dir"], cfg)
    started = provenance.now()
    summary, arrays = TASKS[cfg["task"]["name"]].fn(cfg, dataset)  # before any folder exists
    try:
        folder.prepare()
        if arrays:
            atomic_save_arrays(folder.path / ARRAYS_FILE, arrays)
    except BaseException:  # a full disk: no folder holding only a config stays behind
        folder.discard_if_bare()
        raise
    device = resolve_device(cfg["train"]["device"])  # where the task's tensors live
    origin = provenance.record(device, started, provenance.now())
    summary = {"run_id": folder.id, "status": "complete", **summary, "provenance": origin}
    folder.write_summary(summary)
    say(f"{cfg['task']['name']} done | {Cell.of(cfg)} | {folder.path}")
    return summary


def train_stack(stack: list[dict], dataset: Dataset, *, progress: bool = True,
                say: Callable[[str], None] = print) -> list[dict]:
    """Train one stack, resuming from its checkpoint if one exists; writes every folder.

    A checkpoint that loads but does not fit (other shapes, missing entries) is treated like
    an unreadable one: a warning, and the stack starts over. A failure before anything but
    config.yaml is written removes the folders again.
    """
    device = resolve_device(stack[0]["train"]["device"])
    trainer = Trainer(stack, dataset, device)  # bad sizes fail here, before any folder exists
    folders = [RunFolder(c["results_dir"], c) for c in stack]
    try:
        for folder in folders:
            folder.prepare()
        return _train_prepared(stack, folders, trainer, dataset, device, progress, say)
    except BaseException:
        for folder in folders:
            folder.discard_if_bare()
        raise


def _train_prepared(stack, folders, trainer, dataset, device, progress, say) -> list[dict]:
    lead = folders[0]
    checkpoint = lead.load_checkpoint()
    if checkpoint is not None and checkpoint.get("run_ids") == [f.id for f in folders]:
        try:
            trainer.restore(checkpoint)
            say(f"resuming {lead.id} at step {trainer.state.step}")
        except Exception as err:  # loads, but is not this stack's state
            warnings.warn(f"{lead.checkpoint_path}: checkpoint does not fit this run "
                          f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                          "starting the run from scratch", stacklevel=2)
            trainer = Trainer(stack, dataset, device)  # restore may have loaded a part
    trackers = [open_tracker(c["logger"], f.id, run_name(c), c["logger"].get("group") or
                             c.get("name"), c, f.path) for c, f in zip(stack, folders)]
    exit_code = 1
    try:

        def on_eval(m: int, row: dict) -> None:
            folders[m].write_metrics(trainer.state.rows[m])
            _logged(trackers[m].log, row, step=row["step"])

        def save_checkpoint(payload: dict) -> None:
            lead.save_checkpoint({**payload, "run_ids": [f.id for f in folders]})

        summaries = trainer.run(on_eval, save_checkpoint, progress=progress)
        origin = provenance.record(trainer.device, trainer.state.started, provenance.now())
        results = []
        for cfg, folder, tracker, summary in zip(stack, folders, trackers, summaries):
            summary = {"run_id": folder.id, **summary, "provenance": origin}
            folder.write_summary(summary)  # first: a logger's failure never costs the result
            _logged(tracker.summary, summary)
            say(_final_line(cfg, folder, summary))
            results.append(summary)
        exit_code = 0
        return results
    finally:
        for tracker in trackers:
            _logged(tracker.finish, exit_code=exit_code)


def _logged(call, *args, **kwargs) -> None:
    """Call a tracker (wandb) method; its failure (a full or unwritable wandb folder, a lost
    connection) is a one-line warning, never the end of a run or the loss of its results,
    which live in the run folder whatever the logger does."""
    try:
        call(*args, **kwargs)
    except Exception as err:  # any logger error: the run folder is the record
        warnings.warn(f"logger failed ({type(err).__name__}: "
                      f"{' '.join(str(err).split())[:200]}); the run goes on, its results are "
                      "in its folder", stacklevel=2)


def run_name(cfg: dict) -> str:
    c = Cell.of(cfg)
    return f"{c.algo}-N{c.width}-L{c.depth}-{c.activation}-{c.data}-s{c.seed}"


def _final_line(cfg: dict, folder: RunFolder, summary: dict) -> str:
    if summary["diverged"]:
        outcome = f"diverged at step {summary['diverged_step']}"
    else:
        acc = summary["test_acc"]
        outcome = f"test accuracy {100 * acc:.2f}%" if math.isfinite(acc) else "no accuracy"
        if "grad_cosine" in summary:
            outcome += f", grad cosine to BP {summary['grad_cosine']:.3f}"
    return f"{outcome} | {Cell.of(cfg)} | {folder.path}"
