"""The thread count: chosen by problem size, recorded in a checkpoint and resumed with
(float32 sums depend on it, so a resumed run keeps its numbers only with the same count)."""

from __future__ import annotations

import torch

from pcalm.core.device import PARALLEL_MIN_MACS, threads_for
from pcalm.runs.train import Trainer
from tests.test_graph_path import _dataset, _stack_configs


def _cfg(width: int, batch: int = 64) -> dict:
    return {"model": {"width": width}, "train": {"batch_size": batch}}


def test_small_nets_run_one_thread_and_large_ones_what_is_available():
    assert threads_for(_cfg(8), 2) == threads_for(_cfg(32), 2) == threads_for(_cfg(128), 2) == 1
    assert threads_for(_cfg(256), 2) == 2 and threads_for(_cfg(1024), 4) == 4
    assert 64 * 255**2 < PARALLEL_MIN_MACS <= 64 * 256**2
    assert threads_for(_cfg(1024), 0) == 1


def test_a_checkpoint_records_the_thread_count_and_resume_restores_it(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        trainer = Trainer(_stack_configs(tmp_path), _dataset())
        payload = trainer.checkpoint_payload()
        assert payload["threads"] == 1
        torch.set_num_threads(2)  # a resumed job given another count
        Trainer(_stack_configs(tmp_path), _dataset()).restore(payload)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_resuming_a_native_run_without_the_native_loop_says_it_is_not_bit_identical(
        tmp_path, monkeypatch):
    """The path is, like the thread count, below the run id: a run that trained on the native
    loop and resumes where no C compiler built it goes on eagerly, and says so."""
    import pytest

    from pcalm.core.native import fused
    from pcalm.runs import train

    trainer = Trainer(_stack_configs(tmp_path), _dataset())
    trainer.state.path_steps = {"native": 3}
    payload = trainer.checkpoint_payload()
    monkeypatch.setattr(train.fused, "library", lambda: None)
    monkeypatch.setattr(fused, "_failure", "RuntimeError: no C compiler")
    with pytest.warns(UserWarning, match=r"native loop, which is not available here \("
                                         r"RuntimeError: no C compiler\).*not bit-identical"):
        Trainer(_stack_configs(tmp_path), _dataset()).restore(payload)
    trainer.state.path_steps = {"eager": 3}  # an eager run: nothing to say
    payload = trainer.checkpoint_payload()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(_stack_configs(tmp_path), _dataset()).restore(payload)
