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
import hashlib
import io
import json

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from harness import storage
from harness.config import SweepConfig
from harness.errors import HarnessError, NoResults
from harness.phase import Phase, Source
from harness.run_layout import SweepLayout

PARAM_PREFIX = "param."  # a results row's columns of the config's searched values


def params_of(row: dict) -> dict:
    """The searched values of a results row (its ``param.*`` columns), by name."""
    return {k.removeprefix(PARAM_PREFIX): v for k, v in row.items() if k.startswith(PARAM_PREFIX)}


def config_id(params: dict) -> str:
    """A stable short id of a config (its searched values), shared by its search and confirmation runs.
    Numbers compare as floats: a YAML default of 2 and a sampled 2.0 are the same config."""
    canonical = {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for k, v in params.items()}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()[:10]


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
        fixed[f"sweep.{name}.epochs"], fixed[f"sweep.{name}.search_epochs"] = section.epochs, section.budget(Source.SEARCH)
    rows = []
    for trial_id in _subdirs(layout.trials_dir):
        trial = layout.trial(trial_id)
        if not storage.exists(trial.params):
            continue
        info = json.loads(storage.read_bytes(trial.params))
        missing = [k for k in ("phase", "params", "source", "train_seed", "config_id") if k not in info]
        if missing:  # written before confirmation runs existed (2025): the sweep cannot be ranked with them
            raise HarnessError(f"{trial.params}: no {', '.join(missing)} (written by an older harness); "
                               "report this sweep with the version that ran it, or run it again")
        searched: dict = {}
        _flatten(PARAM_PREFIX.rstrip("."), info["params"], searched)
        # Where the row came from: a search trial (the sweep's training seed) or a confirmation run.
        origin = {"source": Source(info["source"]), "train_seed": int(info["train_seed"]),
                  "config_id": info["config_id"]}
        for stage in (1, 2):
            files = storage.list_files(trial.stage(stage).metrics_dir, ".json")
            planned = sweep.stage(stage).budget(origin["source"])
            for i, f in enumerate(files):
                m = json.loads(storage.read_bytes(f))
                status = m.get("status", "running")
                if i == len(files) - 1 and status == "running":
                    status = "stopped" if m.get("epoch", 0) < planned else "finished"
                row = {"trial_id": trial_id, "phase": Phase(info["phase"]), "stage": stage, "status": status,
                       "epoch": int(m.get("epoch", 0)), "planned_epochs": planned}
                for k, v in m.items():
                    if k not in row and isinstance(v, (int, float, str)) and not isinstance(v, bool):
                        row[k] = v
                row.update(origin)
                row.update(searched)
                row.update(fixed)
                rows.append(row)
    return rows


def last_by_run(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Each run's last evaluation, by (trial id, stage): it carries the run's status and cumulative cost.
    The one place that decides what "a run's last evaluation" is; everything else reads it from here."""
    last: dict[tuple[str, int], dict] = {}
    for r in rows:
        key = (r["trial_id"], r["stage"])
        if key not in last or r["epoch"] >= last[key]["epoch"]:
            last[key] = r
    return last


def last_evaluations(rows: list[dict]) -> list[dict]:
    """Each run's (trial and stage) last evaluation."""
    return list(last_by_run(rows).values())


def last_by_trial(rows: list[dict]) -> dict[str, dict]:
    """Each trial's last evaluation: that of its last stage (a joint trial that diverged in Stage-I ends there)."""
    out: dict[str, dict] = {}
    for (trial_id, _stage), r in sorted(last_by_run(rows).items(), key=lambda kv: kv[0][1]):
        out[trial_id] = r
    return out


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
