"""The CPU goals table of `make bench` (pcalm/sweeps/bench_shapes.py): what each column is
computed from, the interleaving with the JAX peer, and the competing process. Speeds
themselves are never asserted (benchmarks measure them, tests do not)."""

from __future__ import annotations

import csv
import sys

import pytest
import torch

from pcalm.sweeps import bench_shapes


@pytest.fixture
def fake_peer(tmp_path):
    """A 'JAX peer' that prints a fixed ms per call, and logs each call's arguments."""
    def make(ms: str, code: int = 0):
        log = tmp_path / "peer.log"
        script = tmp_path / "peer.py"
        script.write_text(f"import sys\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) "
                          f"+ '\\n')\nprint('compiling...')\nprint({ms!r})\n"
                          f"sys.exit({code})\n")
        return (sys.executable, str(script)), log
    return make


def test_columns_come_from_the_rounds_as_documented(monkeypatch, fake_peer):
    """Planted pcalm timings 2, 4, 5 ms (quiet rounds, each followed by the eager loop's 20,
    30, 25 ms) and 8 ms (loaded); the peer says 10 ms: per-round ratios 5, 2.5, 2 → speed-up
    2.5 (their median, not 10 / median(2, 4, 5))."""
    planted = iter([2.0, 20.0, 4.0, 30.0, 5.0, 25.0, 8.0])
    busy_during = []
    real_busy = bench_shapes.busy_process

    class Busy:
        def __enter__(self):
            self.inner = real_busy()
            proc = self.inner.__enter__()
            busy_during.append(proc.poll() is None)  # spinning when the loaded timing starts
            return proc

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

    monkeypatch.setattr(bench_shapes, "median_ms", lambda call, reps: next(planted))
    monkeypatch.setattr(bench_shapes, "busy_process", Busy)
    peer, log = fake_peer("10.0")
    (row,) = bench_shapes.measure([(32, 64, 64)], rounds=3, peer=peer, say=lambda s: None)
    assert log.read_text().splitlines() == ["32 64 64 64"] * 3  # N L B T, one call per round
    assert busy_during == [True]
    assert row["pcalm_ms"] == 4.0 and row["jax_ms"] == 10.0 and row["eager_ms"] == 25.0
    assert row["speedup_over_jax"] == pytest.approx(2.5)
    assert row["speedup_goal"] == 4.0 and row["speedup_goal_met"] is False  # 4× at N=32, L=64
    assert row["us_per_step"] == pytest.approx(4000 / 64)
    assert row["loaded_over_quiet"] == 2.0 and row["load_goal_met"] is False
    assert row["step_goal_us"] == "" and row["step_goal_met"] == ""
    assert "2.50× JAX (missed, goal ≥ 4×)" in bench_shapes.verdict(row)


def test_the_step_goal_applies_at_n8_l32(monkeypatch):
    monkeypatch.setattr(bench_shapes, "median_ms", lambda call, reps: 2.4)  # 2.4 ms / 64 steps
    (row,) = bench_shapes.measure([(8, 32, 64)], rounds=2, say=lambda s: None)
    assert row["us_per_step"] == pytest.approx(37.5) and row["step_goal_met"] is True
    assert row["loaded_over_quiet"] == 1.0 and row["load_goal_met"] is True
    assert row["jax_ms"] == "" and row["speedup_goal_met"] == ""  # no peer configured
    assert row["speedup_goal"] == 2.0


def test_a_failing_peer_says_so_in_one_line(fake_peer):
    peer, _ = fake_peer("oops", code=3)
    with pytest.raises(RuntimeError, match="the JAX peer failed at N=8 L=4 T=2"):
        bench_shapes.jax_ms(peer, 8, 4, 2)


def test_the_busy_process_spins_and_is_gone_after():
    with bench_shapes.busy_process() as proc:
        assert proc.poll() is None
    assert proc.poll() is not None


def test_the_timed_call_is_pcalms_pcalm_step_at_one_thread(monkeypatch):
    """The call is a real PC-ALM weight-gradient computation at the shape, and the table is
    measured on one thread (restored after)."""
    seen = []

    def timed(call, reps):
        seen.append(torch.get_num_threads())
        grads = call()
        assert [tuple(g.shape) for g in grads[:3]] == [(6, 784), (4, 6, 6), (10, 6)]
        return 1.0

    monkeypatch.setattr(bench_shapes, "median_ms", timed)
    before = torch.get_num_threads()
    (row,) = bench_shapes.measure([(6, 6, 3)], rounds=1, say=lambda s: None)
    assert seen == [1, 1, 1] and torch.get_num_threads() == before  # auto, eager, loaded
    assert row["path"] in ("native", "eager")  # native wherever a C compiler is at hand


def test_bench_shapes_only_writes_the_table(tmp_path, monkeypatch, fake_peer, capsys):
    from pcalm.sweeps import bench

    monkeypatch.setattr(bench_shapes, "SHAPES", ((4, 3, 2),))
    peer, _ = fake_peer("1.5")
    out = tmp_path / "bench.csv"
    threads = torch.get_num_threads()
    try:
        bench.main(["--shapes-only", "--shape-rounds", "1", "--jax-python", peer[0],
                    "--jax-peer", peer[1], "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    (row,) = csv.DictReader((tmp_path / "bench_shapes.csv").open())
    assert (row["N"], row["L"], row["T"], row["jax_ms"]) == ("4", "3", "2", "1.5")
    assert float(row["speedup_over_jax"]) == pytest.approx(1.5 / float(row["pcalm_ms"]),
                                                           rel=1e-4)
    assert not out.exists()  # --shapes-only: no main table
    assert "N=4 L=3 T=2: load" in capsys.readouterr().out
