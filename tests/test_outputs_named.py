"""One command never destroys another's output: a table covers its whole grid whatever part
of it was run, a setting that changes the runs names its own table, figures carry their
scale, and a 1×1 grid is drawn legibly with true minus signs and no `+0.0`.
"""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from pcalm.analysis.collect import write_tables  # noqa: E402
from pcalm.plots import grid as grid_heatmaps  # noqa: E402
from pcalm.plots.style import check_scale, signed  # noqa: E402
from pcalm.runs.folder import RunFolder  # noqa: E402
from pcalm.sweeps.grid import load_sweep, table_scope, variant_name  # noqa: E402
from tests.conftest import REPO  # noqa: E402

FIG2 = ["experiment=figure2", "scale=smoke"]
CELL = ["model.width=8", "model.depth=8", "model.activation=relu"]


@pytest.fixture
def results(tmp_path, monkeypatch, fake_data_root):
    monkeypatch.setenv("PCALM_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("PCALM_DATA", str(fake_data_root))
    return tmp_path / "results"


def _finish(cfg: dict, acc: float) -> None:
    """A complete run folder as training leaves it (config.yaml, metrics.csv, summary.json)."""
    folder = RunFolder(cfg["results_dir"], cfg).prepare()
    folder.write_metrics([{"step": 0, "test_acc": 0.1}, {"step": 1, "test_acc": acc}])
    folder.write_summary({"run_id": folder.id, "status": "complete", "diverged": False,
                          "test_acc": acc, "steps": 1})


def test_a_pinned_cell_collects_into_the_whole_grids_table(results):
    whole = load_sweep(FIG2).configs
    assert len(whole) == 72  # 3 algorithms × 3 activations × N, L ∈ {8, 32} × seeds {0, 1}
    others = [c for c in whole if c["model"]["width"] == 32][:2]  # trained earlier
    for cfg in others:
        _finish(cfg, 0.5)
    written = write_tables(table_scope([*FIG2, *CELL, "train.seed=3"]))
    collected, expected, table = written.table, written.expected, written.path
    assert table.name == "figure2-smoke.csv"
    assert expected == 72 + 3  # the whole grid, plus the three seed-3 runs asked for
    ids = set(pd.read_csv(table)["run_id"])
    assert {RunFolder(c["results_dir"], c).id for c in others} <= ids  # nothing dropped
    assert len(collected) == 2


def test_a_setting_that_changes_the_runs_gets_its_own_table(results):
    scope = table_scope([*FIG2, "data.train_size=600"])
    assert scope.label == "figure2-smoke-data.train_size=600"
    assert scope.scale_label == "smoke-data.train_size=600"
    assert len(scope.configs) == 72
    same = table_scope([*FIG2, "data.train_size=6000", "logger=offline"])  # smoke's own value
    assert same.label == "figure2-smoke"


def test_variant_names_are_file_names():
    named = variant_name(["inference.budget=32", "+data.x='a b'"])
    assert named == "data.x=_a_b_+inference.budget=32"
    long = variant_name([f"algo.alpha={i / 7}" for i in range(20)])
    assert len(long) <= 80 and "/" not in long


def _one_cell_table(path, diff: float):
    """A 1×1 grid: BP, PC, PC-ALM at N = L = 8, three activations, two seeds."""
    rows = []
    for act, algo, seed in itertools.product(("identity", "tanh", "relu"), ("bp", "pc", "pcalm"),
                                             (0, 1)):
        acc = 0.5 + (diff if algo == "pcalm" else 0.0) + 0.01 * seed
        rows.append({"run_id": f"{act}{algo}{seed}", "algo.name": algo, "model.activation": act,
                     "model.width": 8, "model.depth": 8, "train.seed": seed, "test_acc": acc,
                     "diverged": False, "data.name": "fashion_mnist", "train.batch_size": 64,
                     "data.train_size": 6000})
    pd.DataFrame(rows).to_csv(path, index=False)


def test_a_one_cell_figure_is_legible_and_named_by_its_scale(tmp_path, monkeypatch):
    tables = tmp_path / "tables"
    tables.mkdir()
    _one_cell_table(tables / "figure2-smoke-data.train_size=600.csv", diff=-0.0004)
    drawn = {}

    def keep(fig, name, out=None):
        drawn["fig"], drawn["name"] = fig, name
        fig.canvas.draw()
        return tmp_path / f"{name}.png"

    monkeypatch.setattr(grid_heatmaps, "save", keep)
    grid_heatmaps.plot_grid("figure2", "smoke-data.train_size=600", tables, None)
    assert drawn["name"] == "figure2-smoke-data.train_size=600"
    fig = drawn["fig"]
    renderer = fig.canvas.get_renderer()
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    assert len(titles) == 4
    boxes = [t.get_window_extent(renderer) for t in titles]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), "panel titles overlap"
    bars = [ax.xaxis.label for ax in fig.axes if ax.get_xlabel() and "(" in ax.get_xlabel()
            and not ax.get_title()]
    for a, b in itertools.combinations([t.get_window_extent(renderer) for t in bars], 2):
        assert not a.overlaps(b), "colour-bar labels overlap"
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    texts += [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()]
    assert not any(t in ("+0.0", "-0.0", "−0.0") for t in texts)  # −0.04 pp shows as 0.0
    assert "0.0" in texts
    assert not any(t.startswith("-") for t in texts)  # a true minus sign, never a hyphen
    sizes = [t.get_fontsize() for ax in fig.axes for t in ax.texts if t.get_text().startswith("±")]
    assert sizes and min(sizes) >= grid_heatmaps.SD_MIN_PT


def test_signed_numbers_use_a_minus_sign_and_no_signed_zero():
    assert [signed(v) for v in (1.25, -1.25, -0.04, 0.04, 0.0)] == \
        ["+1.2", "−1.2", "0.0", "0.0", "0.0"]
    assert signed(-3.0, 0) == "−3"


def test_plots_take_a_scale_with_a_variant_and_refuse_others():
    assert check_scale("paper") == "paper"
    assert check_scale("smoke-data.train_size=600") == "smoke-data.train_size=600"
    for bad in ("huge", "smoke-", "smoke-../x/y"):
        with pytest.raises(ValueError, match=f"bad value --scale={bad!r}: allowed: smoke, paper"):
            check_scale(bad)


def test_make_figure_draws_under_the_scales_name():
    import subprocess

    out = subprocess.run(["make", "-n", "figure2", "SCALE=smoke", "ARGS=model.width=8"],
                         cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert "experiments/collect.py --print-scale experiment=figure2 scale=smoke model.width=8" \
        in out
    assert 'experiments/plot.py figure2 --scale "$scale"' in out
