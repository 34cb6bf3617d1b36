"""Trials that share a GPU: Ray packs fractional requests, and each trial is charged its fraction.

CI has no GPU. A Ray head of the test's own declares one (``ray start --num-gpus 1``), and the trials
train on the CPU through ``train.device: cpu``: the documented setting for checking a GPU sweep's
scheduling and packing on a machine without GPUs. What Ray schedules is the same either way.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile

import pytest

from harness.config import ResourcesConfig
from harness.results import read_parquet
from harness.worker import RunClock
from tests.conftest import ROOT, free_port, own_agent_ports, stop_processes_naming, token_auth_env, write_sweep


@pytest.fixture()
def one_gpu_head(tmp_path):
    temp = tempfile.mkdtemp(prefix="rg-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = token_auth_env(tmp_path)
    port = free_port()
    subprocess.run(
        ["ray", "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=4", "--num-gpus=1",
         f"--temp-dir={temp}", "--disable-usage-stats", "--include-dashboard=false", *own_agent_ports()],
        env=env, check=True, capture_output=True, timeout=120,
    )
    try:
        yield {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        stop_processes_naming(temp)  # end only what this fixture started
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_four_quarter_gpu_trials_run_at_once_on_one_gpu_and_are_charged_a_quarter(one_gpu_head, tmp_path):
    sweep = write_sweep(ROOT / "search_spaces" / "tiny.yaml", tmp_path / "sweep.yaml", **{
        "name": "packed", "resources": {"workers": 0, "cpus_per_worker": 1, "gpus_per_worker": 0.25},
        "train.device": "cpu", "stage1.epochs": 2, "stage2.epochs": 1, "search.num_samples": 4,
        "search.scheduler": "none"})
    storage = tmp_path / "runs"
    out = subprocess.run([sys.executable, "harness/tune.py", "--sweep", sweep, "--storage", str(storage),
                          "--strategy", "joint"], cwd=ROOT, env=one_gpu_head, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = read_parquet(str(storage / "packed" / "results.parquet"))
    spans: dict[str, list[float]] = {}
    for r in rows:
        span = spans.setdefault(r["trial_id"], [r["started_at"], r["reported_at"]])
        span[0], span[1] = min(span[0], r["started_at"]), max(span[1], r["reported_at"])
        # Charged by the fraction it reserved: a quarter of its wall time.
        assert r["gpu_seconds"] == pytest.approx(0.25 * r["wall_seconds"], abs=0.02)
    assert len(spans) == 4
    # Ray gave all four 0.25-GPU trials the one GPU at the same time: their training overlapped.
    assert max(start for start, _ in spans.values()) < min(end for _, end in spans.values()), spans


def test_gpu_seconds_are_wall_time_times_the_fraction_times_the_workers(monkeypatch):
    from harness import worker

    clock_now = iter([1000.0, 1010.0])  # perf_counter at the start and at the report
    monkeypatch.setattr(worker.time, "perf_counter", lambda: next(clock_now))
    two_whole_gpus = ResourcesConfig(workers=2, gpus_per_worker=1.0)
    totals = RunClock(world=2, gpus_per_trial=two_whole_gpus.gpus_per_trial, resumed_from={"wall_seconds": 30.0}).totals()
    assert totals["wall_seconds"] == 40.0  # 30 s before the resume + 10 s since
    assert totals["gpu_seconds"] == 80.0  # 40 s x 1 GPU x 2 workers
    assert ResourcesConfig(workers=1, gpus_per_worker=0.25).gpus_per_trial == 0.25
    assert ResourcesConfig(workers=0, gpus_per_worker=0.5).gpus_per_trial == 0.5  # local mode is one worker


def test_a_trial_past_its_gpu_share_fails_with_the_share_named(monkeypatch):
    import types

    import torch

    from harness import worker

    card = types.SimpleNamespace(total_memory=140 * 2**30)
    monkeypatch.setattr(worker.torch.cuda, "get_device_properties", lambda device: card)
    error = worker._share_exceeded(0.25, torch.device("cuda", 0))
    assert isinstance(error, worker.GpuShareExceeded)
    assert str(error) == ("this trial needed more GPU memory than its share: resources.gpus_per_worker 0.25 of 140 GiB "
                          "is 35.0 GiB; lower train.batch_size or raise the share")
