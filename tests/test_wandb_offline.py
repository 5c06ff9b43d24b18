"""`logger=offline` through a real run: a wandb offline run directory in the run folder holds
the run's metrics (group = experiment, run id = run id). No network: WANDB_MODE=offline.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
RUN = ["logger=offline", "name=wandbtest", "algo=pc", "model.width=8", "model.depth=4",
       "inference.budget=4", "inference.state_lr=0.25", "data.train_size=200",
       "data.test_size=100", "train.batch_size=50", "train.evals_per_epoch=2",
       "train.progress=off", "train.device=cpu"]
BLOCK, HEADER = 32768, 7  # wandb's LevelDB-style log: 32 KiB blocks, 7-byte headers


def wandb_records(path: Path) -> list:
    """The protobuf records of a `.wandb` file (whole records, reassembled across blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, chunk, records = path.read_bytes(), HEADER, b"", []  # skip the file header
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # FULL or LAST: a record is complete
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def history(records: list) -> list[dict]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({i.key or ".".join(i.nested_key): i.value_json for i in r.history.item})
    return rows


def test_offline_run_directory_holds_the_metrics(fake_data_root, results_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", PCALM_DATA=str(fake_data_root),
               WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"),
               WANDB_CACHE_DIR=str(tmp_path / "wandb_cache"),
               WANDB_DATA_DIR=str(tmp_path / "wandb_data"))
    proc = subprocess.run([sys.executable, "experiments/run.py", *RUN], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (run,) = (results_dir / "runs").iterdir()
    (offline,) = (run / "wandb").glob(f"offline-run-*-{run.name}")  # wandb run id = run id
    records = wandb_records(offline / f"run-{run.name}.wandb")
    (info,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (info.run_id, info.run_group, info.project) == (run.name, "wandbtest", "pcalm")
    assert info.display_name == "pc-N8-L4-relu-fashion_mnist-s0"

    logged = history(records)
    metrics = pd.read_csv(run / "metrics.csv")
    assert [int(row["step"]) for row in logged] == list(metrics["step"])
    assert [float(row["test_acc"]) for row in logged] == list(metrics["test_acc"])
