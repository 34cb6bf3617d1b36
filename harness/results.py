"""Sweep results: every trial's evaluations, read back from storage, as rows and as Parquet.

One row per trial and evaluation: trial id, phase, stage, status, epoch, every metric, the
flattened config (searched values and the sweep's fixed settings), wall/CPU/GPU seconds, and where
the row came from: ``source`` (search or confirm), ``train_seed`` and ``config_id`` (shared by a
config's search run and its confirmation runs).
Built from the files each run keeps (``params.json``, ``stage*/metrics/epoch-*.json``), so a
finished or interrupted sweep can be tabulated without Tune's internals.
"""

from __future__ import annotations

import dataclasses
import io
import json

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from harness import storage
from harness.config import SweepConfig
from harness.confirm import PARAM_PREFIX, config_id
from harness.errors import NoResults
from harness.run_layout import SweepLayout


def _flatten(prefix: str, obj, out: dict) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = obj if isinstance(obj, (int, float, str, bool)) or obj is None else json.dumps(obj)


def _subdirs(uri: str) -> list[str]:
    return storage.list_names(uri, pafs.FileType.Directory)


def collect_rows(layout: SweepLayout, sweep: SweepConfig) -> list[dict]:
    fixed: dict = {}
    _flatten("sweep", {k: v for k, v in dataclasses.asdict(sweep).items() if k not in ("stage1", "stage2")}, fixed)
    for name, section in (("stage1", sweep.stage1), ("stage2", sweep.stage2)):
        fixed[f"sweep.{name}.epochs"], fixed[f"sweep.{name}.search_epochs"] = section.epochs, section.budget("search")
    rows = []
    for trial_id in _subdirs(layout.trials_dir):
        trial = layout.trial(trial_id)
        if not storage.exists(trial.params):
            continue
        info = json.loads(storage.read_bytes(trial.params))
        searched: dict = {}
        _flatten(PARAM_PREFIX.rstrip("."), info["params"], searched)
        # Where the row came from: a search trial (the sweep's training seed) or a confirmation run.
        # Sweeps written before confirmation runs existed have search trials only.
        origin = {"source": info.get("source", "search"), "train_seed": int(info.get("train_seed", sweep.train.seed)),
                  "config_id": info.get("config_id") or config_id(info["params"])}
        for stage in (1, 2):
            files = storage.list_files(trial.stage(stage).metrics_dir, ".json")
            planned = (sweep.stage1 if stage == 1 else sweep.stage2).budget(origin["source"])
            for i, f in enumerate(files):
                m = json.loads(storage.read_bytes(f))
                status = m.get("status", "running")
                if i == len(files) - 1 and status == "running":
                    status = "stopped" if m.get("epoch", 0) < planned else "finished"
                row = {"trial_id": trial_id, "phase": info["phase"], "stage": stage, "status": status,
                       "epoch": int(m.get("epoch", 0)), "planned_epochs": planned}
                for k, v in m.items():
                    if k not in row and isinstance(v, (int, float, str)) and not isinstance(v, bool):
                        row[k] = v
                row.update(origin)
                row.update(searched)
                row.update(fixed)
                rows.append(row)
    return rows


def last_evaluations(rows: list[dict]) -> list[dict]:
    """Each run's (trial and stage) last evaluation: it carries the run's cumulative cost."""
    last: dict[tuple, dict] = {}
    for r in rows:
        key = (r["trial_id"], r["stage"])
        if key not in last or r["epoch"] >= last[key]["epoch"]:
            last[key] = r
    return list(last.values())


def write_parquet(rows: list[dict], uri: str) -> None:
    if not rows:
        raise NoResults("no trial has reported an evaluation yet")
    columns = sorted({k for r in rows for k in r})
    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes(uri, buf.getvalue())


def read_parquet(uri: str) -> list[dict]:
    return pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pylist()
