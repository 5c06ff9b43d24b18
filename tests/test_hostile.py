"""The second hostile pass (issue 24): what a careful user and a hostile neighbour do, and what
must hold then — nothing false in a table or report, nothing written outside results_dir,
a downloader bounded in time, size and memory, one line instead of a traceback.

Each test plants the case itself and checks the outcome against values it computes, never
against the code under test.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pcalm.analysis.tables import load, load_metrics
from pcalm.runs.config import resolve_run_config
from pcalm.runs.folder import RunFolder
from pcalm.runs.runner import execute
from tests.conftest import REPO, base_config

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"data": {"train_size": 200, "test_size": 100},
         "train": {"batch_size": 50, "evals_per_epoch": 1, "checkpoint_every": 2}}
QUIET = {"progress": False, "say": lambda _: None}


@pytest.fixture
def data_env(fake_data_root, results_dir, monkeypatch):
    monkeypatch.setenv("PCALM_DATA", str(fake_data_root))
    return results_dir


def small(fake_data_root, results_dir, **sections):
    merged = {k: dict(v) for k, v in SMALL.items()}
    for key, values in sections.items():
        merged.setdefault(key, {}).update(values)
    return resolve_run_config(base_config(fake_data_root, results_dir, **merged))


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes: what a check compares before and after."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


# ------------------------------------------------------------------ 1. tampered run folders


@pytest.fixture(scope="module")
def eight_runs(tmp_path_factory, fake_data_root):
    """Eight finished tiny runs (seeds 0-7, one stack), as a pristine folder to copy."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    results = tmp_path_factory.mktemp("pristine") / "results"
    configs = [small(fake_data_root, results, train={"seed": s}) for s in range(8)]
    execute(configs, max_stack=8, **QUIET)
    torch.set_num_threads(before)
    return results, [RunFolder(results, c).id for c in configs]


def tamper(folder: Path, how: str, other: Path) -> None:
    summary_path, metrics_path = folder / "summary.json", folder / "metrics.csv"
    summary = json.loads(summary_path.read_text())
    if how == "edited config":
        config = yaml.safe_load((folder / "config.yaml").read_text())
        config["model"]["width"] = 32
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    elif how in ("acc abc", "acc nan", "acc missing", "acc 7"):
        value = {"acc abc": "abc", "acc nan": math.nan, "acc 7": 7.0}.get(how)
        summary.pop("test_acc") if how == "acc missing" else summary.update(test_acc=value)
        summary_path.write_text(json.dumps(summary))
    elif how == "torn metrics":
        text = metrics_path.read_text()
        metrics_path.write_text(text[: len(text) - 7])
    elif how == "header-only metrics":
        metrics_path.write_text(metrics_path.read_text().splitlines()[0] + "\n")
    elif how == "foreign metrics":
        shutil.copy(other / "metrics.csv", metrics_path)
    elif how == "no metrics":
        metrics_path.unlink()


TAMPERINGS = ["edited config", "acc abc", "acc nan", "acc missing", "acc 7", "torn metrics",
              "header-only metrics", "foreign metrics"]


def test_tampered_run_folders_are_left_out_of_every_table_and_named(eight_runs, tmp_path):
    pristine, ids = eight_runs
    results = tmp_path / "results"
    shutil.copytree(pristine, results)
    good = load(results)
    assert len(good) == 8 and good["valid"].all() and not good.attrs["excluded"]
    runs = results / "runs"
    for rid, how in zip(ids, TAMPERINGS):
        other = runs / next(i for i in ids if i != rid)
        tamper(runs / rid, how, other)
    before = tree(results)
    df, metrics = load(results), load_metrics(results)
    assert tree(results) == before  # reading changes nothing
    excluded = df.attrs["excluded"]
    assert set(excluded) == set(ids), excluded  # every tampered folder, and only those
    assert df.empty and metrics.empty and metrics.attrs["excluded"] == excluded
    assert "hashes to" in excluded[ids[0]] and "test_acc='abc'" in excluded[ids[1]]
    assert "torn" in excluded[ids[5]] and "another run" in excluded[ids[7]]
    assert all("\n" not in why for why in excluded.values())


def test_a_metrics_file_that_agrees_on_its_last_row_is_still_caught(eight_runs, tmp_path):
    """Runs at chance often end on the same step and accuracy, so a copied or edited
    metrics.csv can agree with the summary's last row: the summary's SHA-256 of the file the
    run wrote catches it (and stays out of the tables)."""
    import hashlib

    pristine, ids = eight_runs
    results = tmp_path / "results"
    shutil.copytree(pristine, results)
    folder = results / "runs" / ids[0]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["metrics_sha256"] == hashlib.sha256(
        (folder / "metrics.csv").read_bytes()).hexdigest()
    assert "metrics_sha256" not in load(results).columns
    lines = (folder / "metrics.csv").read_text().splitlines(keepends=True)
    head = lines[0].rstrip("\n").split(",")
    cells = lines[1].rstrip("\n").split(",")
    cells[head.index("test_acc")] = "0.123"  # a middle row: the last row still agrees
    lines[1] = ",".join(cells) + "\n"
    (folder / "metrics.csv").write_text("".join(lines))
    excluded = load(results).attrs["excluded"]
    assert set(excluded) == {ids[0]}
    assert excluded[ids[0]].startswith("metrics.csv is not the file this run wrote")


def test_collect_names_excluded_folders_in_one_line_and_counts_reach_the_report(
        eight_runs, tmp_path, monkeypatch, capsys):
    """The grid of eight runs through experiments/collect.py's library (pcalm.analysis.collect):
    two tampered, one diverged-looking;
    the warning is one line, the table holds the rest, and the report counts both."""
    pristine, ids = eight_runs
    results = tmp_path / "results"
    shutil.copytree(pristine, results)
    runs = results / "runs"
    tamper(runs / ids[0], "edited config", runs / ids[1])
    tamper(runs / ids[1], "foreign metrics", runs / ids[2])
    from pcalm.analysis import collect

    df = load(results)
    table = results / "tables" / "figure2-smoke.csv"
    table.parent.mkdir()
    df.to_csv(table, index=False)
    collect.say_excluded(table, df.attrs["excluded"])
    collect.excluded_path(table).write_text(collect.excluded_csv(df.attrs["excluded"]))
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("warning: 2 run folders excluded")
    assert ids[0] in err and ids[1] in err
    assert collect.outcome_counts(df) == "6 valid"
    listed = pd.read_csv(table.with_name("figure2-smoke-excluded.csv"))
    assert sorted(listed["run_id"]) == sorted(ids[:2])


# --------------------------------------------------------------- 1. the report never lies


def _fig2_table(path: Path, test_acc: list | None, diverged: bool) -> None:
    rows = []
    for algo in ("bp", "pcalm", "pc"):
        for width, depth in ((8, 4), (8, 32), (32, 4), (32, 32)):
            rows.append({"run_id": f"{algo}{width}{depth}", "algo.name": algo,
                         "model.width": width, "model.depth": depth,
                         "model.activation": "relu", "train.seed": 0,
                         "data.name": "fashion_mnist",
                         "status": "diverged" if diverged else "complete",
                         "diverged": diverged})
    df = pd.DataFrame(rows)
    if test_acc is not None:
        df["test_acc"] = test_acc * (len(df) // len(test_acc))
    df.to_csv(path, index=False)


def run_report(tables: Path, out: Path, monkeypatch, capsys) -> tuple[int, str, str]:
    """The report as `make report` writes it (experiments/report.py's library call)."""
    from pcalm.analysis.scorecard import write_report

    text, written = write_report(tables, "smoke", out)
    assert written == out and out.read_text(encoding="utf-8") == text + "\n"
    return 0, text, ""


def entry(args: list[str], pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """`python experiments/<args>` as a user types it (torch-free: a few seconds)."""
    path = os.pathsep.join(str(p) for p in (pythonpath, REPO) if p)
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": path})


def damage_table(table: Path, damage: str) -> None:
    """Plant one kind of damage in a collected table (a figure2 grid table)."""
    if damage == "random bytes":
        table.write_bytes(bytes(range(256)) * 8)
    elif damage == "missing column":
        pd.read_csv(table).drop(columns=["model.depth"]).to_csv(table, index=False)
    elif damage == "junk value":
        lines = table.read_text().splitlines()
        head = lines[0].split(",").index("model.width")
        cells = lines[4].split(",")
        cells[head] = "wide"
        lines[4] = ",".join(cells)
        table.write_text("\n".join(lines) + "\n")


DAMAGE_SAYS = {"random bytes": "not a readable CSV", "missing column": "'model.depth'",
               "junk value": "model.width='wide' in row 5: allowed: a number",
               "bad out": "its folder does not exist; allowed: a path in an existing folder"}


def one_line_failure(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert proc.returncode not in (0, None) and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


def claim_row(text: str, number: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {number} |"))


@pytest.mark.parametrize("case", ["all diverged", "no test_acc column", "all NaN"])
def test_a_claim_without_valid_runs_is_never_marked_holds(case, tmp_path, monkeypatch, capsys):
    tables = tmp_path / "tables"
    tables.mkdir()
    if case == "all diverged":
        _fig2_table(tables / "figure2-smoke.csv", [math.nan], diverged=True)
    elif case == "no test_acc column":
        _fig2_table(tables / "figure2-smoke.csv", None, diverged=False)
    else:
        _fig2_table(tables / "figure2-smoke.csv", [math.nan], diverged=False)
    code, out, _ = run_report(tables, tmp_path / "r.md", monkeypatch, capsys)
    assert code == 0, out
    for number in ("2", "3", "3b"):
        row = claim_row(out, number)
        assert "✓" not in row and "✗ no valid runs" in row, row
    assert "figure2: 0 valid of 12 runs" in out


def test_a_claim_with_valid_runs_keeps_its_verdict(tmp_path, monkeypatch, capsys):
    tables = tmp_path / "tables"
    tables.mkdir()
    _fig2_table(tables / "figure2-smoke.csv", [0.8], diverged=False)  # every algo equal
    (tables / "figure2-smoke-excluded.csv").write_text("run_id,reason\nabc,edited\n")
    code, out, _ = run_report(tables, tmp_path / "r.md", monkeypatch, capsys)
    assert code == 0
    for number in ("2", "3", "3b"):  # decided by the rules, not overruled
        assert "no valid runs" not in claim_row(out, number)
    assert "figure2: 12 valid of 12 runs (1 excluded)" in out


@pytest.mark.parametrize("damage", ["random bytes", "missing column", "junk value", "bad out"])
@pytest.mark.parametrize("command", ["report", "plot"])
def test_a_damaged_table_gives_the_report_and_the_plot_one_line(damage, command, tmp_path):
    """`experiments/report.py` and `experiments/plot.py` on a damaged table: one line naming
    the file and the bad column or value (and what is allowed), exit ≠ 0, nothing written."""
    tables = tmp_path / "tables"
    tables.mkdir()
    table = tables / "figure2-smoke.csv"
    _fig2_table(table, [0.8], diverged=False)
    out = tmp_path / ("missing" if damage == "bad out" else "") / "out"
    damage_table(table, damage)
    args = (["experiments/report.py", "--out", str(out.with_suffix(".md"))]
            if command == "report" else ["experiments/plot.py", "figure2", "--out", str(out)])
    err = one_line_failure(entry([*args, "--scale", "smoke", "--tables", str(tables)]))
    assert err.startswith("error: ") and DAMAGE_SAYS[damage] in err, err
    if damage != "bad out":
        assert str(table) in err
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["figure2-smoke.csv"]


@pytest.mark.parametrize("case", ["no test_acc column", "nan test_acc"])
def test_a_run_without_an_accuracy_is_never_drawn_as_chance(case, tmp_path):
    """The report counts such runs "without accuracy"; a figure refuses the table in one
    line (collect never writes such a row: only a damaged table has one)."""
    tables = tmp_path / "tables"
    tables.mkdir()
    table = tables / "figure2-smoke.csv"
    _fig2_table(table, None if case == "no test_acc column" else [math.nan], diverged=False)
    err = one_line_failure(entry(["experiments/plot.py", "figure2", "--scale", "smoke",
                                  "--tables", str(tables), "--out", str(tmp_path / "f")]))
    says = ("column 'test_acc' is missing" if case == "no test_acc column"
            else "that did not diverge have no test_acc (first: ")
    assert err.startswith(f"error: {table}: ") and says in err, err
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["figure2-smoke.csv"]


SIGINT_AT = {  # sitecustomize.py: a Ctrl-C planted where each command does its work
    "report": "import pcalm.analysis.scorecard as m\n"
              "def build(*a, **k): raise KeyboardInterrupt\nm.build = build\n",
    "plot": "import matplotlib.figure as m\n"
            "def savefig(self, fname, *a, **k):\n"
            "    open(fname, 'wb').write(b'half')\n    raise KeyboardInterrupt\n"
            "m.Figure.savefig = savefig\n",
}


@pytest.mark.parametrize("command", ["report", "plot"])
def test_ctrl_c_in_the_report_or_a_plot_is_one_line_and_keeps_the_old_output(command,
                                                                            tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    _fig2_table(tables / "figure2-smoke.csv", [0.8], diverged=False)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SIGINT_AT[command])
    out = tmp_path / "out"
    previous = [out.with_suffix(".md")] if command == "report" else \
        [out.with_suffix(".pdf"), out.with_suffix(".png")]
    for path in previous:
        path.write_text("previous")
    args = (["experiments/report.py", "--out", str(previous[0])] if command == "report"
            else ["experiments/plot.py", "figure2", "--out", str(out)])
    proc = entry([*args, "--scale", "smoke", "--tables", str(tables)], pythonpath=site)
    err = one_line_failure(proc)
    assert proc.returncode == 130 and err.startswith("interrupted: "), err
    assert all(p.read_text() == "previous" for p in previous)  # nothing half-written
    assert not list(tmp_path.glob("out*.tmp"))


STOP_ON_IMPORT = """import sys
class Stop:  # Ctrl-C while {module} is being imported (the first seconds of a command)
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            raise KeyboardInterrupt
sys.meta_path.insert(0, Stop())
"""


@pytest.mark.parametrize("args, module", [
    (["experiments/collect.py", "experiment=figure2", "scale=smoke"], "pandas"),
    (["experiments/report.py", "--scale", "smoke"], "pandas"),
    (["experiments/run.py", "algo=bp"], "hydra"),
    (["experiments/sweep.py", "experiment=figure1", "--dry-run"], "torch"),
])
def test_ctrl_c_while_an_entry_point_starts_is_one_line(args, module, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(STOP_ON_IMPORT.format(module=module))
    proc = entry(args, pythonpath=site)
    err = one_line_failure(proc)
    assert proc.returncode in (130, -2), (proc.returncode, err)  # killed by SIGINT
    name = Path(args[0]).name
    assert err.startswith(f"interrupted: {name}, while starting; every file it writes is "
                          "atomic"), err


def test_a_figure_counts_its_diverged_runs(tmp_path):
    """A figure says how many of its runs diverged (here figure 10's note, from the run table
    beside its metrics): 1 of 2 runs."""
    from matplotlib.figure import Figure

    from pcalm.plots import draw

    tables = tmp_path / "tables"
    tables.mkdir()
    rows = [{"run_id": f"r{seed}", "algo.name": "bp", "model.activation": "relu",
             "model.width": 8, "model.depth": 4, "train.seed": seed, "diverged": seed == 1,
             "test_acc": [0.5, math.nan][seed]} for seed in (0, 1)]
    pd.DataFrame(rows).to_csv(tables / "figure10-smoke.csv", index=False)
    metrics = [{**{k: v for k, v in r.items() if k not in ("diverged", "test_acc")},
                "step": step, "test_acc": 0.1 + 0.1 * step, "train_loss": 1.0}
               for r in rows for step in (0, 1)]
    pd.DataFrame(metrics).to_csv(tables / "figure10-smoke-metrics.csv", index=False)
    drawn = []
    original = Figure.savefig

    def keep(self, *args, **kwargs):
        drawn.append([t.get_text() for t in self.texts])
        return original(self, *args, **kwargs)

    try:
        Figure.savefig = keep
        draw("figure10", "smoke", tables, tmp_path / "figure10")
    finally:
        Figure.savefig = original
    assert any("1 of 2 runs diverged" in text for text in drawn[0]), drawn[0]


# ------------------------------------------------------- 1. bounds, plans and sweep axes


def test_a_step_size_that_diverges_at_once_is_refused_with_its_bound(fake_data_root, tmp_path):
    from pcalm.runs.config import ConfigError

    results = tmp_path / "results"
    with pytest.raises(ConfigError) as err:
        small(fake_data_root, results, train={"eta0": 1e30})
    # The bound, computed here: sqrt(float32 max) / (γ0² sqrt(N/L)) with N=16, L=4, γ0=1.
    bound = math.sqrt(3.4028234663852886e38) / math.sqrt(16 / 4)
    assert str(err.value).startswith("bad value train.eta0=1e+30: allowed: at most ")
    assert f"{bound:.4g}" in str(err.value) and "\n" not in str(err.value)
    small(fake_data_root, results, train={"eta0": bound * 0.5})  # below it: accepted
    assert not results.exists()


def test_a_checkpoint_beyond_the_plan_restarts_the_run(fake_data_root, results_dir, recwarn):
    """A checkpoint claiming step 1,000,000 of a 4-step run: the run starts over and trains
    its 4 real steps (200 samples / batch 50), instead of ending "complete" at once."""
    import torch

    from pcalm.runs.runner import load_run_dataset
    from pcalm.runs.train import Trainer

    cfg = small(fake_data_root, results_dir)
    folder = RunFolder(results_dir, cfg).prepare()
    trainer = Trainer([cfg], load_run_dataset(cfg), torch.device("cpu"))
    payload = trainer.checkpoint_payload()
    payload["state"] = {**payload["state"], "step": 1_000_000}
    folder.save_checkpoint({**payload, "run_ids": [folder.id]})
    (outcome,) = execute([cfg], **QUIET).trained
    assert outcome["steps"] == 200 // 50 and outcome["status"] == "complete"
    assert list(pd.read_csv(folder.metrics_path)["step"]) == [0, 4]
    assert any("outside this run's plan of 4 steps" in str(w.message) for w in recwarn)


@pytest.mark.parametrize("axis", ["results_dir=A,B", "name=aa,bb", "data.root=A,B",
                                  "train.threads=1,2", "train.checkpoint_every=5,50",
                                  "sweep.grid.train.threads=[1,2]"])
def test_a_sweep_over_a_key_outside_the_run_id_is_refused(axis, tmp_path, monkeypatch):
    from pcalm.runs.config import ConfigError
    from pcalm.sweeps.grid import load_sweep

    monkeypatch.chdir(tmp_path)  # relative results folders A, B would land here
    key = axis.split("=")[0].removeprefix("sweep.grid.")
    with pytest.raises(ConfigError) as err:
        load_sweep(["experiment=figure2", "scale=smoke", axis])
    text = str(err.value)
    assert text.startswith(f"bad sweep axis {key}=") and "not part of the run id" in text
    assert "\n" not in text and list(tmp_path.iterdir()) == []


ETA_HEADER = "data,activation,width,depth,lambda_max,state_lr,seeds\n"


def test_an_eta_table_listing_a_cell_twice_is_refused_naming_both_lines(tmp_path):
    from pcalm.runs.eta import EtaTableError, load_table

    table = tmp_path / "eta_table.csv"
    table.write_text(ETA_HEADER + "fashion_mnist,relu,8,4,10.0,0.1,0-1-2\n"
                     "fashion_mnist,relu,8,8,5.0,0.2,0-1-2\n"
                     "fashion_mnist,relu,8,4,4.0,0.25,0-1-2\n")
    with pytest.raises(EtaTableError) as err:
        load_table(table)
    assert f"{table}, lines 2 and 4: the cell fashion_mnist relu 8 4 is listed twice" in str(
        err.value)


def test_an_eta_table_with_a_byte_order_mark_reads_like_one_without(tmp_path):
    from pcalm.runs.eta import load_table

    table = tmp_path / "eta_table.csv"
    table.write_bytes(b"\xef\xbb\xbf" + (ETA_HEADER + "mnist,tanh,16,4,8.0,0.125,0\n").encode())
    assert load_table(table) == {("mnist", "tanh", 16, 4): 0.125}


# ------------------------------------------------- 2. nothing written outside results_dir


def _outside_with_bait(tmp_path: Path) -> Path:
    """A folder outside results_dir holding what a run folder's preparation would delete."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".metrics.csv.abc.tmp").write_text("someone's temp file")
    (outside / "checkpoint.pt").write_bytes(b"someone's checkpoint")
    return outside


@pytest.mark.parametrize("planted", ["run folder", "runs dir", "lock", "locks dir"])
def test_a_symlinked_run_folder_or_lock_is_refused_and_nothing_outside_changes(
        planted, fake_data_root, results_dir, tmp_path):
    from pcalm.runs.folder import ResultsDirError

    cfg = small(fake_data_root, results_dir)
    rid = RunFolder(results_dir, cfg).id
    outside = _outside_with_bait(tmp_path)
    link = {"run folder": results_dir / "runs" / rid, "runs dir": results_dir / "runs",
            "lock": results_dir / "locks" / f"{rid}.lock",
            "locks dir": results_dir / "locks"}[planted]
    link.parent.mkdir(parents=True, exist_ok=True)
    target = outside / "planted.lock" if planted == "lock" else outside
    link.symlink_to(target)
    before = tree(outside)
    with pytest.raises(ResultsDirError) as err:
        execute([cfg], **QUIET)
    assert "symlink" in str(err.value) and "\n" not in str(err.value)
    assert tree(outside) == before and not (outside / "planted.lock").exists()


def test_a_run_folder_that_is_a_file_fails_in_one_line(fake_data_root, results_dir):
    """experiments/run.py prints a ValueError's one line (pcalm.cli.exit_with)."""
    from pcalm.runs.folder import ResultsDirError

    cfg = small(fake_data_root, results_dir)
    folder = RunFolder(results_dir, cfg)
    folder.path.parent.mkdir(parents=True)
    folder.path.write_text("not a folder")
    with pytest.raises(ResultsDirError, match="a file where a run folder belongs") as err:
        execute([cfg], **QUIET)
    assert "\n" not in str(err.value)
    assert folder.path.read_text() == "not a folder"  # nothing lost


def test_a_summary_that_is_a_folder_is_refused_before_training(fake_data_root, results_dir):
    from pcalm.runs.folder import ResultsDirError

    cfg = small(fake_data_root, results_dir)
    folder = RunFolder(results_dir, cfg)
    (folder.summary_path / "keep").mkdir(parents=True)
    with pytest.raises(ResultsDirError, match="summary.json: not a plain file"):
        execute([cfg], **QUIET)
    assert (folder.summary_path / "keep").is_dir() and not folder.metrics_path.exists()


def test_the_submitit_folder_is_private_and_refused_when_others_can_write_above_it(tmp_path):
    """Each queued SLURM job unpickles its job from the submitit folder: it is made 0700,
    and a folder above it that others can write (not sticky) is refused in one line."""
    import stat

    from pcalm.sweeps.submitit_launcher import UnsafeFolder, private_folder

    results = tmp_path / "results"
    results.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    folder = private_folder(results / "submitit" / "figure2-smoke-1")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    os.chmod(results, 0o775)  # a group-writable results folder: the group could swap folders
    with pytest.raises(UnsafeFolder) as err:
        private_folder(results / "submitit" / "figure2-smoke-2")
    assert f"{results} is writable by others (mode 775" in str(err.value)
    assert "\n" not in str(err.value)
    os.chmod(results, 0o1777)  # sticky, like /tmp: others cannot rename what is ours
    assert private_folder(results / "submitit" / "figure2-smoke-3").is_dir()


# ------------------------------------------------------ 4. sizes: one line, before allocating


@pytest.mark.parametrize("change, expected", [
    ({"model": {"width": 100_000}}, "bad value model.width=100000 (model.depth=4): needs about"),
    ({"train": {"epochs": 10**9}}, "at most 100000 evaluations"),
])
def test_sizes_that_cannot_run_fail_in_one_line_before_any_folder(change, expected,
                                                                  fake_data_root, results_dir):
    cfg = small(fake_data_root, results_dir, **change)
    with pytest.raises(ValueError) as err:
        execute([cfg], **QUIET)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert not (results_dir / "runs").exists() or not any((results_dir / "runs").iterdir())


def test_more_evaluations_than_steps_mean_every_step_without_building_a_huge_plan():
    """train.evals_per_epoch=1e9 once hung building 1e9 evaluation points per epoch; it is
    every step of the epoch (what any count ≥ the steps gives), planned at once."""
    from pcalm.runs.train import evaluation_steps

    assert evaluation_steps(4, 2, 10**9) == {0, 1, 2, 3, 4, 5, 6, 7, 8}
    assert evaluation_steps(4, 2, 10**9) == evaluation_steps(4, 2, 4) == \
        evaluation_steps(4, 2, 7)  # the old rule's set for counts above the steps
    assert evaluation_steps(10, 1, 2) == {0, 5, 10}


def test_the_memory_estimate_counts_weights_and_states():
    """4 copies of 784·N + (L−2)·N² + 10·N weights plus 8·L·B·N states, float32."""
    from pcalm.runs.train import memory_estimate

    cfg = {"model": {"width": 1000, "depth": 10},
           "train": {"batch_size": 64, "dtype": "float32"}}
    weights = 784 * 1000 + 8 * 1000**2 + 1000 * 10
    assert memory_estimate(cfg, 784, 10, 3) == 3 * (4 * weights + 8 * 10 * 64 * 1000) * 4


# ------------------------------------------------ 4. a failing logger never costs a result


class _BrokenTracker:
    """What wandb does when its folder is full or unwritable: every call raises."""

    def log(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    summary = finish = log


def test_a_failing_logger_never_loses_a_finished_run(fake_data_root, results_dir, monkeypatch,
                                                      recwarn):
    from pcalm.runs import runner

    monkeypatch.setattr(runner, "open_tracker", lambda *a, **k: _BrokenTracker())
    cfg = small(fake_data_root, results_dir)
    (summary,) = execute([cfg], **QUIET).trained
    folder = RunFolder(results_dir, cfg)
    assert folder.exists_complete()
    assert json.loads(folder.summary_path.read_text())["test_acc"] == summary["test_acc"]
    messages = [str(w.message) for w in recwarn]
    assert any(m.startswith("logger failed (OSError") and "\n" not in m for m in messages)


def test_a_bogus_wandb_mode_is_named_in_one_line(monkeypatch):
    from pcalm.runs.tracking import effective_mode

    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(ValueError, match=r"^bad value WANDB_MODE='bogus' \(environment\): "
                                         r"allowed: online, offline, disabled, dryrun, or unset$"):
        effective_mode({"mode": "offline"})
    assert effective_mode({"mode": "none"}) == "none"  # no tracking: the variable is not read


# -------------------------------------------------------------- 4. a full disk: one line


def _enospc_on(monkeypatch, name_part: str):
    """Make every atomic write of a file whose name holds `name_part` fail like a full disk."""
    from pcalm import atomic

    real = atomic.atomic_write

    def full(path, write, binary):
        if name_part in Path(path).name:
            def fill_then_fail(f):
                write(f)
                raise OSError(28, "No space left on device", str(path))
            return real(path, fill_then_fail, binary)
        return real(path, write, binary)

    monkeypatch.setattr(atomic, "atomic_write", full)


def test_a_full_disk_mid_run_leaves_no_temp_file_and_no_orphan_folder(
        fake_data_root, results_dir, monkeypatch):
    _enospc_on(monkeypatch, "metrics")
    cfg = small(fake_data_root, results_dir)
    with pytest.raises(OSError, match="No space left"):
        execute([cfg], **QUIET)
    folder = RunFolder(results_dir, cfg)
    assert not folder.path.exists()  # nothing but config.yaml was written: the folder goes
    assert not list(results_dir.rglob("*.tmp"))


def test_a_sweep_refuses_a_disk_without_room_for_one_run(tmp_path, monkeypatch):
    """Needed: the largest run's checkpoint (weights + Adam's two moments, float32) plus 16 MB
    for its small files; N = 1024, L = 64 holds 784·1024 + 62·1024² + 10·1024 weights."""
    import shutil as shutil_mod

    from pcalm.sweeps import plan

    cfg = {"task": {"name": "train"}, "model": {"width": 1024, "depth": 64},
           "train": {"dtype": "float32"}}
    params = 784 * 1024 + 62 * 1024**2 + 10 * 1024
    assert plan.room_needed([cfg]) == 12 * params + 16 * 2**20
    usage = shutil_mod.disk_usage(tmp_path)
    monkeypatch.setattr(plan.shutil, "disk_usage",
                        lambda p: usage._replace(free=12 * params + 16 * 2**20 - 1))
    with pytest.raises(ValueError) as err:
        plan.check_room(tmp_path, [cfg])
    assert str(err.value).startswith(f"not enough room in {tmp_path}: ")
    assert "needs about 769 MB" in str(err.value)  # 789,897,216 B + 16 MiB
    monkeypatch.setattr(plan.shutil, "disk_usage",
                        lambda p: usage._replace(free=12 * params + 16 * 2**20))
    plan.check_room(tmp_path, [cfg])  # exactly enough
    monkeypatch.undo()  # the real disk: a folder not made yet is measured on its parent's
    plan.check_room(tmp_path / "not" / "made" / "yet", [{"task": {"name": "credit_traces"}}])


def test_sweep_py_on_a_full_disk_is_one_line_and_launches_nothing(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import shutil\nreal = shutil.disk_usage\n"
        "shutil.disk_usage = lambda p: real(p)._replace(free=2**20)\n")
    results = tmp_path / "results"
    proc = entry(["experiments/sweep.py", "experiment=figure1", "scale=smoke",
                  f"results_dir={results}"], pythonpath=site)
    err = one_line_failure(proc)
    assert proc.returncode == 2
    assert err.startswith(f"error: not enough room in {results}: 1.0 MB free"), err
    assert not (results / "sweeps").exists() or not list((results / "sweeps").iterdir())


# The disk fills once the sweep has checked its room: the first write of the launched
# multirun (Hydra's multirun.yaml) fails as a full disk does, leaving an empty file, and from
# then on the disk reports 1 MB free to every process.
FILLS_DURING_THE_SWEEP = """
import builtins, errno, io, os, shutil, sys
marker = os.environ["FILLED_MARKER"]
real_usage, real_open = shutil.disk_usage, builtins.open
shutil.disk_usage = lambda p: (real_usage(p)._replace(free=2**20) if os.path.exists(marker)
                               else real_usage(p))
if sys.argv and sys.argv[0].endswith("run_job.py"):
    real_open(marker, "w").close()
    def full(file, mode="r", *args, **kwargs):
        if "w" in str(mode) and str(file).startswith(os.environ["FILLED_RESULTS"]):
            real_open(file, mode).close()  # created, then nothing fits
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)
    builtins.open = io.open = full
"""


@pytest.mark.parametrize("launcher", ["basic", "local"])
def test_a_disk_that_fills_during_a_sweep_is_one_line_and_leaves_no_empty_file(
        tmp_path, monkeypatch, launcher):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FILLS_DURING_THE_SWEEP)
    results = tmp_path / "results"
    monkeypatch.setenv("FILLED_MARKER", str(tmp_path / "filled"))
    monkeypatch.setenv("FILLED_RESULTS", str(results))
    proc = entry(["experiments/sweep.py", "experiment=figure1", "scale=smoke",
                  f"sweep.launcher={launcher}", f"results_dir={results}"], pythonpath=site)
    err = one_line_failure(proc)
    assert proc.returncode == 1
    assert err.startswith(f"error: 2 runs missing: the disk of {results} filled during the "
                          "sweep (1.0 MB free); finished runs are kept"), err
    assert (tmp_path / "filled").exists()  # the multirun did meet the full disk
    empty = [p for p in (results / "sweeps").rglob("*") if p.is_file() and not p.stat().st_size]
    assert empty == []  # Hydra's cut multirun.yaml is gone


def test_a_full_disk_is_found_in_an_errors_chain_and_in_a_jobs_text():
    import errno

    from pcalm.sweeps.job import disk_full

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("could not save the config") from None
    except RuntimeError as err:
        assert disk_full(err)  # raised while handling the full disk
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert disk_full(RuntimeError("job failed:\nOSError: [Errno 28] No space left on device"))
    assert not disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not disk_full(RuntimeError("2 of 4 runs failed"))


@pytest.mark.parametrize("fails", ["config", "arrays"])
def test_a_full_disk_while_a_folder_is_prepared_leaves_no_folder(fake_data_root, results_dir,
                                                                  monkeypatch, fails):
    """The disk fills at a run's first file (its config), or at a diagnostic task's arrays."""
    _enospc_on(monkeypatch, fails)
    if fails == "config":
        cfg = small(fake_data_root, results_dir)
    else:
        from tests.test_figure_tasks import PC, SCALAR

        cfg = resolve_run_config(base_config(fake_data_root, results_dir, model=SCALAR,
                                             task={"name": "scalar_dynamics"},
                                             algo=dict(PC, budget=5)))
    with pytest.raises(OSError, match="No space left"):
        execute([cfg], **QUIET)
    assert not RunFolder(results_dir, cfg).path.exists()
    assert not list(results_dir.rglob("*.tmp"))


@pytest.mark.parametrize("kind", ["", "-metrics", "-excluded"])
def test_a_full_disk_in_collect_is_one_line_and_keeps_every_old_table(data_env, monkeypatch,
                                                                      capsys, kind):
    """The disk fills while the main table is written, or after it while the metrics or the
    excluded list are: the three old tables stay, as a set, and no temp file is left."""
    import tempfile

    from pcalm import atomic
    from pcalm.analysis.collect import TablesNotWritten, write_tables
    from pcalm.sweeps.grid import table_scope

    grid = ["experiment=figure2", "scale=smoke", "inference.state_lr=0.25", "algo=bp",
            "sweep.grid={model.width:[8]}", "model.depth=4", "model.activation=relu"]
    scope = table_scope(grid)
    tables = data_env / "tables"
    tables.mkdir(parents=True)
    old = {f"{scope.label}{k}.csv": f"run_id\nold{k}\n" for k in ("", "-metrics", "-excluded")}
    for name, text in old.items():
        (tables / name).write_text(text)
    fails = f"{scope.label}{kind}.csv"
    real = tempfile.mkstemp

    def full_disk(*args, prefix="", **kwargs):
        if prefix == f".{fails}.":
            raise OSError(28, "No space left on device", str(tables / fails))
        return real(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", full_disk)
    with pytest.raises(TablesNotWritten) as stop:
        write_tables(scope)
    err = str(stop.value)  # experiments/collect.py prints it after "error: ", exit 2
    assert "\n" not in err and not capsys.readouterr().err.strip()
    assert err == (f"cannot write the tables: No space left on device ({tables / fails}); "
                   "the previous tables are unchanged")
    assert {p.name: p.read_text() for p in tables.iterdir()} == old  # no temp left either
    monkeypatch.undo()
    write_tables(scope)  # with room again, all three are new
    assert all((tables / name).read_text() != text for name, text in old.items())


def test_a_non_ascii_override_says_how_to_write_it():
    from pcalm import cli
    from pcalm.runs.config import ConfigError

    with pytest.raises(ConfigError) as err:
        cli.parse_overrides(["logger.project=naïve"])
    assert str(err.value) == ("cannot parse override 'logger.project=naïve': the character 'ï' "
                              "is not allowed unquoted; allowed: ASCII, or quote the value: "
                              "logger.project='\"naïve\"'")
    (quoted,) = cli.parse_overrides(['logger.project="naïve"'])  # the advice works
    assert quoted.value == "naïve"


@pytest.mark.parametrize("override, says", [
    ("model.width=é", "cannot parse override 'model.width=é': the character 'é' is not allowed "
                      "unquoted; allowed: ASCII, or quote the value: model.width='\"é\"'"),
    ("mödel.width=8", "cannot parse override 'mödel.width=8': the key 'mödel.width' has the "
                      "character 'ö'; allowed: config keys are ASCII (`python "
                      "experiments/run.py --help` lists the groups, `--cfg job` the keys)"),
    ("model.width=[1,", "cannot parse override 'model.width=[1,': no viable alternative at "
                        "input '[1,'; allowed: key=value, a list as key=[a,b], a sweep as "
                        "key=a,b (Hydra's override syntax)"),
])
def test_a_single_run_names_an_unreadable_override_as_a_sweep_does(override, says, tmp_path):
    """A single run composes its config (Hydra's compose), a sweep parses its overrides first:
    both say the same line, never Hydra's `LexerNoViableAltException: …`."""
    from pcalm import cli
    from pcalm.runs.config import ConfigError

    with pytest.raises(ConfigError) as err:
        cli.parse_overrides([override])
    assert str(err.value) == says
    proc = entry(["experiments/run.py", override, f"results_dir={tmp_path}"])
    assert proc.returncode == 2 and proc.stderr == f"error: {says}\n" and not proc.stdout
