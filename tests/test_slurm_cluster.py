"""The SLURM path on a real cluster: sweeps submitted, requeued, preempted and cancelled.

Runs where a SLURM cluster answers `sinfo` (CI starts a one-node one: .ci/run and
scripts/local-slurm.sh; here `make slurm-up`) and skips with one line elsewhere. Every
interrupted run must end with the numbers of the uninterrupted one: metrics.csv compared
byte for byte with the run the array sweep trained.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pcalm.runs.folder import RunFolder
from pcalm.sweeps.grid import expand
from tests.conftest import REPO

pytestmark = pytest.mark.slurm

# One cell, 6000 steps (≈20 s on one core) with a checkpoint every 50: long enough to be
# interrupted mid-run and outlive SLURM's grace after a requeue (KillWait, 10 s), short enough
# for CI.
CELL = ["experiment=figure2", "scale=smoke", "algo=pcalm", "model.width=64", "model.depth=8",
        "model.activation=tanh", "inference.budget=16", "inference.state_lr=0.25",
        "data.train_size=1000", "data.test_size=100", "data.verify=false",
        "train.batch_size=10", "train.epochs=60", "train.evals_per_epoch=1",
        "train.checkpoint_every=50", "train.progress=off", "train.device=cpu",
        "train.threads=1", "sweep.launcher=slurm", "sweep.runs_per_job=1"]
ONE_CPU = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
SEEDS = [*CELL, "train.seed=0,1"]
SEED0 = [*CELL, "train.seed=0"]
# How long any one wait may last before the test fails saying what it waited for. Generous:
# on a 2-core machine shared with other work, one sweep takes minutes to start (imports at
# nice 5); a passing suite never waits this long.
TIMEOUT_S = float(os.environ.get("PCALM_SLURM_TEST_TIMEOUT_S", "600"))


def sinfo() -> str | None:
    """None if a cluster answers, else why not."""
    if shutil.which("sinfo") is None:
        return "no sinfo on PATH"
    try:
        done = subprocess.run(["sinfo", "--noheader", "--format=%P %t"], capture_output=True,
                              text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["sinfo failed"])[-1]
    if not re.search(r"\b(idle|mix|alloc)\b", done.stdout):
        return f"no node is up: {' '.join(done.stdout.split())}"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    reason = sinfo()
    if reason:
        pytest.skip(f"no SLURM cluster answers ({reason}); `make slurm-up` starts one here")


@pytest.fixture(scope="module")
def env(cluster, fake_data_root, tmp_path_factory):
    """The sweeps' environment. PCALM_DATA is set here too: the test-made files' checksum is
    part of the run ids the test computes (data.verify=false)."""
    before = os.environ.get("PCALM_DATA")
    os.environ["PCALM_DATA"] = str(fake_data_root)
    yield {**os.environ, "PCALM_SLURM_POLL_S": "1",
           "PCALM_RESULTS": str(tmp_path_factory.mktemp("unused"))}
    if before is None:
        del os.environ["PCALM_DATA"]
    else:
        os.environ["PCALM_DATA"] = before


STARTED: list[subprocess.Popen] = []  # the sweeps the current test started
SUBMITTED: set[str] = set()  # the jobs it submitted itself (sbatch)
RESULTS: list[Path] = []  # where its sweeps record their jobs


def sweep(args: list[str], results: Path, env: dict, stderr=subprocess.PIPE
          ) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "experiments/sweep.py", *args], cwd=REPO,
                            env={**env, "PCALM_RESULTS": str(results)}, text=True,
                            stdout=subprocess.PIPE, stderr=stderr)
    STARTED.append(proc)
    RESULTS.append(results)
    return proc


def sbatch(*args: str) -> str:
    """Submit a job of the test's own; its id (cancelled after the test if still queued)."""
    job_id = slurm("sbatch", "--parsable", *args).strip().split(";")[0]
    SUBMITTED.add(job_id)
    return job_id


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT_S) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"sweep still running after {timeout} s:\n{out}\n{err}")
    return proc.returncode, out, err


def run_sweep(args: list[str], results: Path, env: dict) -> tuple[int, str, str]:
    return finish(sweep(args, results, env))


def slurm(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"
    return done.stdout


def ours(results: Path) -> dict[str, dict]:
    """The jobs the sweeps in `results` recorded: id → {job, name}."""
    record: dict[str, dict] = {}
    for path in results.glob("sweeps/*/slurm_jobs.json"):
        record.update(json.loads(path.read_text()))
    return record


def job_state(job_id: str) -> str:
    """squeue's state of a job ('' once it has left the queue: squeue lists pending, running
    and completing jobs, and none at all once slurmctld has forgotten the id, MinJobAge)."""
    return queue().get(job_id, {}).get("state", "")


def queue() -> dict[str, dict[str, str]]:
    """This user's jobs that squeue lists (pending, running, completing, requeued), one per
    array task: id → {state, reason, name}."""
    jobs = {}
    for line in slurm("squeue", "--noheader", "--array", f"--user={getpass.getuser()}",
                      "--format=%i|%T|%r|%j").splitlines():
        job_id, state, reason, name = (line.strip().split("|", 3) + ["", "", ""])[:4]
        if job_id:
            jobs[job_id] = {"state": state, "reason": reason, "name": name}
    return jobs


def wait_until(condition, what: str, proc: subprocess.Popen | None = None,
               timeout: float = TIMEOUT_S, seen=None) -> None:
    """Poll `condition` until it holds; fail after `timeout` s (or when `proc`, the sweep, ends
    first) saying what was expected and, from `seen()`, what was there instead."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the sweep ended before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"expected {what} within {timeout:.0f} s; saw "
                        f"{seen() if seen else 'it not happen'}; queue: {queue()}")
        time.sleep(0.2)


@pytest.fixture(autouse=True)
def own_queue(cluster):
    """Each test starts with none of this user's jobs in the queue (some need the whole node)
    and leaves none of its own: what it started and did not see finish (a sweep, a blocking
    job, a held job, after a failure too) is cancelled, and the test ends only once SLURM
    lists none of it any more (a cancelled job stays COMPLETING until its processes are
    gone, and would take the next test's CPUs). The cluster must be the suite's own: another
    suite's jobs on it make this wait fail."""
    wait_until(lambda: not queue(), "an empty queue before the test",
               seen=lambda: "jobs of an earlier test or of another suite on this cluster")
    yield
    for proc in STARTED:
        if proc.poll() is None:  # SIGTERM: sweep.py stops its launcher's process group
            proc.terminate()
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    mine = SUBMITTED | {job_id.split("_")[0] for r in RESULTS for job_id in ours(r)}
    STARTED.clear()
    SUBMITTED.clear()
    RESULTS.clear()
    left = sorted(mine & {job_id.split("_")[0] for job_id in queue()})
    if left:
        slurm("scancel", *left)
    wait_until(lambda: not mine & {job_id.split("_")[0] for job_id in queue()},
               f"jobs {left} gone after scancel", seen=lambda: "them still listed")


def the_run(results: Path, args: list[str] = SEED0) -> RunFolder:
    (cfg,) = expand(args)
    return RunFolder(results, cfg)


def job_log(results: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(results.glob("submitit/*/*_log.out")))


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory) -> Path:
    """Both seeds of the cell, uninterrupted, as one array on the cluster."""
    results = tmp_path_factory.mktemp("reference")
    rc, out, err = run_sweep([*SEEDS, *ONE_CPU], results, env)
    assert rc == 0, out + err
    assert "2 runs, 0 already complete (skipped), 2 to run in 2 jobs on slurm" in out
    assert "each job asks SLURM for 1 CPUs, 1 GB, no GPU" in out
    assert "done: 2 complete, 0 missing" in out
    return results


def test_sweep_is_one_job_array_and_a_rerun_trains_nothing(reference, env):
    record = ours(reference)
    assert len(record) == 2
    arrays = {job_id.split("_")[0] for job_id in record}
    assert len(arrays) == 1 and sorted(j.split("_")[1] for j in record) == ["0", "1"]
    (name,) = {entry["name"] for entry in record.values()}
    assert name.startswith("pcalm-figure2-smoke-")
    (array,) = arrays
    states = slurm("sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State",
                   f"--jobs={array}").split()
    assert sorted(states) == [f"{array}_0|COMPLETED", f"{array}_1|COMPLETED"]

    rc, out, err = run_sweep([*SEEDS, *ONE_CPU], reference, env)
    assert rc == 0, err
    assert "2 runs, 2 already complete (skipped), 0 to run in 0 jobs on slurm" in out
    assert len(list(reference.glob("sweeps/*"))) == 1  # nothing new submitted


def test_no_wait_then_a_rerun_while_queued_submits_nothing(env, tmp_path):
    held = [*SEEDS, *ONE_CPU, "+hydra.launcher.additional_parameters.hold=true"]
    rc, out, err = run_sweep([*held, "--no-wait"], tmp_path, env)
    assert rc == 0, out + err
    assert "submitted" in out
    jobs = ours(tmp_path)
    try:
        assert all(job_state(j) == "PENDING" for j in jobs)
        rc, out, err = run_sweep([*held, "--no-wait"], tmp_path, env)
        assert rc == 0, err
        assert "0 already complete (skipped), 2 in queued or running SLURM jobs (skipped), " \
               "0 to run in 0 jobs on slurm" in out
        rc, out, err = run_sweep(held, tmp_path, env)
        assert rc == 1  # waiting here would draw a figure from half a grid
        assert "2 runs wait for SLURM jobs" in err and "re-run the same command" in err
        assert len(list(tmp_path.glob("sweeps/*"))) == 1
    finally:
        slurm("scancel", *jobs)
    wait_until(lambda: not any(job_state(j) for j in jobs), "cancelled jobs gone")
    rc, out, err = run_sweep([*held, "--dry-run"], tmp_path, env)
    assert "2 to run in 2 jobs on slurm" in out  # once gone, their runs go again


def test_a_live_job_of_another_name_with_a_recorded_id_is_not_ours(env, tmp_path):
    """Ids repeat (a cluster reset, two clusters on one results folder): a recorded job counts
    as in flight only if squeue lists it under the recorded name."""
    other = sbatch("--hold", "--job-name=someone-else", "--output=/dev/null", "--wrap=true")
    try:
        folder = tmp_path / "sweeps" / "figure2-smoke-old"
        folder.mkdir(parents=True)
        runs = expand([*SEEDS, *ONE_CPU])
        (folder / "manifest.json").write_text(json.dumps({"jobs": [{"runs": runs}]}))
        (folder / "slurm_jobs.json").write_text(json.dumps(
            {other: {"job": 0, "name": "pcalm-figure2-smoke-old"}}))
        rc, out, err = run_sweep([*SEEDS, *ONE_CPU, "--dry-run"], tmp_path, env)
        assert rc == 0, err
        assert "0 already complete (skipped), 2 to run in 2 jobs on slurm" in out
        # the same record under the live job's name: in flight
        (folder / "slurm_jobs.json").write_text(json.dumps(
            {other: {"job": 0, "name": "someone-else"}}))
        rc, out, err = run_sweep([*SEEDS, *ONE_CPU, "--dry-run"], tmp_path, env)
        assert "2 in queued or running SLURM jobs (skipped)" in out
    finally:
        slurm("scancel", other)


def interrupted_run(env, results: Path, extra: list[str], interrupt,
                    args: list[str] = SEED0, on_requeue=None) -> tuple[str, str]:
    """One run, waited for; `interrupt(job_id)` once it has a checkpoint (so the job's
    signal handlers are in place and there is a step to resume from). Returns the sweep's
    output and the job's log, after checking that it resumed from a checkpoint."""
    proc = sweep([*args, *extra], results, env)
    run = the_run(results, args)
    wait_until(lambda: run.checkpoint_path.exists(), "a checkpoint", proc)
    (job_id,) = ours(results)
    interrupt(job_id)
    hurry_requeued(job_id, proc, on_requeue)
    rc, out, err = finish(proc)
    assert rc == 0, out + err
    assert "done: 1 complete, 0 missing" in out
    log = job_log(results)
    step = re.search(rf"resuming {run.id} at step (\d+)", log)
    assert step and int(step[1]) > 0, log
    said_once(log)
    return out + err, log


def hurry_requeued(job_id: str, proc: subprocess.Popen, on_requeue=None) -> None:
    """Until the sweep ends: a requeued job that SLURM holds back (reason BeginTime: a
    requeued job may start only once its old credential has expired, AuthInfo cred_expire,
    two minutes by default) is started now instead. `on_requeue(job_id)` runs first, once
    per hold (e.g. to change the next attempt's time limit while nothing runs)."""
    deadline = time.monotonic() + TIMEOUT_S
    while proc.poll() is None:
        entry = queue().get(job_id, {})
        if entry.get("state") == "PENDING" and entry.get("reason") == "BeginTime":
            if on_requeue is not None:
                on_requeue(job_id)
            slurm("scontrol", "update", f"JobId={job_id}", "StartTime=now")
            wait_until(lambda: queue().get(job_id, {}).get("reason") != "BeginTime",
                       f"job {job_id} released from its BeginTime hold",
                       seen=lambda: queue().get(job_id))
        if time.monotonic() > deadline:
            pytest.fail(f"expected the sweep of job {job_id} to end within {TIMEOUT_S:.0f} s; "
                        f"the job is {entry or 'no longer queued'}")
        time.sleep(0.5)


def said_once(log: str) -> None:
    """No log record is printed twice (submitit's own stdout and stderr handlers and Hydra's
    used to print each submitit line three times, all with the record's one timestamp)."""
    records = re.findall(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}).*? - (.*)", log)
    repeated = [r for r in set(records) if records.count(r) > 1]
    assert not repeated, repeated


def test_scontrol_requeue_resumes_from_the_checkpoint(reference, env, tmp_path):
    _, log = interrupted_run(env, tmp_path, ONE_CPU,
                             lambda job: slurm("scontrol", "requeue", job))
    same_numbers(reference, tmp_path)
    summary = json.loads(the_run(tmp_path).summary_path.read_text())
    assert summary["attempts"] == 2
    # wall_time_s counts every attempt's training, not only the last one's
    assert summary["wall_time_s"] > last_attempt_seconds(log) + 1.0


def last_attempt_seconds(log: str) -> float:
    """From the job log: the last attempt's time, from `resuming` to the run's last line."""
    from datetime import datetime

    def when(pattern: str) -> datetime:
        stamp = re.findall(rf"^\[([\d-]+ [\d:,]+)\]\[run_job\]\[INFO\] - {pattern}", log, re.M)[-1]
        return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")

    return (when("test accuracy") - when("resuming")).total_seconds()


def test_a_time_limit_checkpoints_and_requeues(env, tmp_path):
    """USR2 `signal_delay_s` before the time limit: submitit requeues, the run resumes.

    Submitted with 10 minutes; once the run has a checkpoint, the limit is cut to a whole
    minute 45 to 105 s away, within signal_delay_s (120): slurmctld, which looks at time
    limits every 30 s, signals at its next look, well before the limit itself. While the job
    waits to start again, the limit goes up to 60 minutes: exactly one timeout, whatever the
    load (a fixed 1-minute limit signalled 5 to 35 s into each attempt, before a loaded job
    had even set up its handler). The run lasts ≈ 60 s, longer than one 30-s look (a run that
    ends first fails below, saying so); its uninterrupted twin trains at the same time, as
    another job on the node's other CPU."""
    longer = [a.replace("train.epochs=60", "train.epochs=180") for a in SEED0]
    limit = ["hydra.launcher.timeout_min=10", "hydra.launcher.signal_delay_s=120",
             "hydra.launcher.max_num_timeout=3"]
    twin = tmp_path / "uninterrupted"
    twin_sweep = sweep([*longer, *ONE_CPU], twin, env)

    def cut_the_limit(job_id: str) -> None:
        elapsed = seconds(slurm("squeue", "--noheader", "--format=%M", f"--jobs={job_id}"))
        minutes = -(-(elapsed + 45) // 60)
        slurm("scontrol", "update", f"JobId={job_id}", f"TimeLimit={minutes}")

    def restore_the_limit(job_id: str) -> None:
        slurm("scontrol", "update", f"JobId={job_id}", "TimeLimit=60")  # ample, under load too

    _, log = interrupted_run(env, tmp_path / "slurm", [*ONE_CPU, *limit], cut_the_limit,
                             longer, on_requeue=restore_the_limit)
    rc, out, err = finish(twin_sweep)
    assert rc == 0, out + err
    assert "Caught signal SIGUSR2" in log and "this job is timed-out" in log, \
        f"the run ended before slurmctld signalled the time limit:\n{log}"
    same_numbers(twin, tmp_path / "slurm", longer)
    assert json.loads(the_run(tmp_path / "slurm", longer).summary_path.read_text())[
        "attempts"] == 2


def seconds(elapsed: str) -> int:
    """squeue's `%M` ([days-][hours:]minutes:seconds) in seconds."""
    days, _, clock = elapsed.strip().rpartition("-")
    total = 0
    for part in clock.split(":"):
        total = total * 60 + int(part)
    return total + 86400 * int(days or 0)


def test_a_preemption_from_partition_high_requeues_and_resumes(reference, env, tmp_path):
    cpus = slurm("sinfo", "--noheader", "--partition=high", "--format=%c").split()[0].rstrip("+")

    def preempt(job_id: str) -> None:  # a job of the high partition that needs every CPU
        sbatch("--partition=high", f"--cpus-per-task={cpus}", "--mem=100",
               "--job-name=pcalm-test-preemptor", "--output=/dev/null", "--wrap=sleep 1")

    _, log = interrupted_run(env, tmp_path, ONE_CPU, preempt)
    assert "DUE TO PREEMPTION" in log, log
    same_numbers(reference, tmp_path)


def same_numbers(reference: Path, results: Path, args: list[str] = SEED0) -> None:
    ref, run = the_run(reference, args), the_run(results, args)
    assert run.metrics_path.read_bytes() == ref.metrics_path.read_bytes()
    a, b = (json.loads(r.summary_path.read_text()) for r in (ref, run))
    for key in ("test_acc", "test_mse", "train_loss", "grad_cosine", "steps"):
        assert a[key] == b[key], key


def test_without_sacct_a_cancelled_job_is_reported_missing(env, tmp_path):
    """A waiting sweep on a cluster without sacct notices, through squeue, a job that left the
    queue without a result, instead of waiting forever; submitit says nothing three times."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    path = os.pathsep.join([str(bin_dir), *[p for p in os.environ["PATH"].split(os.pathsep)
                                            if not (Path(p) / "sacct").exists()]])
    results = tmp_path / "results"
    proc = sweep([*SEED0, *ONE_CPU], results, {**env, "PATH": path})
    wait_until(lambda: len(ours(results)) == 1, "a submitted job", proc)
    (job_id,) = ours(results)
    wait_until(lambda: job_state(job_id) == "RUNNING", "a running job", proc)
    slurm("scancel", job_id)
    rc, out, err = finish(proc, timeout=60)
    assert rc == 1
    assert f"error: SLURM job {job_id} left the queue without a result (no sacct here" in err
    assert "done: 0 complete, 1 missing" in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), err


def test_a_refused_submission_is_one_line_and_leaves_no_sweep(env, tmp_path):
    rc, out, err = run_sweep([*SEED0, *ONE_CPU,
                              "+hydra.launcher.additional_parameters.constraint=nosuch"],
                             tmp_path, env)
    assert rc == 2, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: SLURM did not accept the jobs: "
                                                   "sbatch: error:"), err
    assert not list(tmp_path.glob("sweeps/*")) and not list(tmp_path.glob("submitit/*"))


@pytest.mark.parametrize("override, message", [
    ("hydra.launcher.cpus_per_task=4096", "bad value hydra.launcher.cpus_per_task=4096: "
                                          "allowed: at most"),
    ("hydra.launcher.mem_gb=100000", "bad value hydra.launcher.mem_gb=100000: allowed: at most"),
    ("hydra.launcher.partition=nosuch", "bad value hydra.launcher.partition=nosuch: allowed: "),
])
def test_a_request_no_node_can_meet_fails_before_submitting(env, tmp_path, override, message):
    rc, out, err = run_sweep([*SEED0, override], tmp_path, env)
    assert rc == 2, out + err
    assert err.startswith("error: " + message) and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("sweeps/*"))


def test_a_gpu_is_asked_for_only_where_there_are_gpus(env, tmp_path):
    has_gpus = "gpu" in slurm("sinfo", "--noheader", "--format=%G")
    if has_gpus:
        pytest.skip("this cluster has GPUs")
    rc, out, err = run_sweep([*SEED0, "train.device=auto", "--dry-run"], tmp_path, env)
    assert rc == 0, err
    assert re.search(r"each job asks SLURM for \d+ CPUs, \d+ GB, no GPU", out)
    rc, out, err = run_sweep([*SEED0, "hydra.launcher.gpus_per_node=1"], tmp_path, env)
    assert rc == 2 and "bad value hydra.launcher.gpus_per_node=1:" in err and "no GPUs" in err


def test_a_job_pending_for_want_of_resources_is_reported(env, tmp_path):
    """A job that cannot start (the node's CPUs are taken) is reported while the sweep waits;
    setup lines of the launcher config run in the job. The blocking job runs until the sweep
    has said so (its stderr goes to a file, read as it grows)."""
    cpus = slurm("sinfo", "--noheader", "--format=%c").split()[0].rstrip("+")
    blocker = sbatch(f"--cpus-per-task={cpus}", "--mem=100", "--job-name=pcalm-test-blocker",
                     "--output=/dev/null", f"--wrap=sleep {TIMEOUT_S:.0f}")
    said = tmp_path / "sweep.err"
    warning = r"warning: SLURM job \S+ has been pending for \d+ s, reason Resources"
    with said.open("w") as stderr:
        try:
            wait_until(lambda: job_state(blocker) == "RUNNING", "the blocking job running",
                       seen=lambda: job_state(blocker))
            proc = sweep([*SEED0, *ONE_CPU, "hydra.launcher.setup=[echo pcalm-setup-line]"],
                         tmp_path, {**env, "PCALM_SLURM_PENDING_WARN_S": "2"}, stderr=stderr)
            wait_until(lambda: re.search(warning, said.read_text()),
                       "the sweep's warning that its job pends for Resources", proc,
                       seen=lambda: said.read_text() or "nothing on its stderr")
        finally:
            slurm("scancel", blocker)
        rc, out, _ = finish(proc)
    err = said.read_text()
    assert rc == 0, out + err
    assert len(re.findall(warning, err)) == 1, err  # said once
    (script,) = tmp_path.glob("submitit/*/*_submission.sh")
    assert "echo pcalm-setup-line" in script.read_text()
    assert "pcalm-setup-line" in job_log(tmp_path)
