"""Training through Ray Train: 2-worker DDP, resume equality, Stage-II from a checkpoint, divergence."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
import torch

from harness import checkpoint
from harness import train as train_cmd
from harness.run_layout import stage_run, storage
from tests.conftest import ROOT, write_sweep

TINY = ROOT / "search_spaces" / "tiny.yaml"


def _sweep(tmp_path: pathlib.Path, **overrides) -> str:
    return write_sweep(TINY, tmp_path / "sweep.yaml", **overrides)


def _run(capsys, *args) -> dict:
    code = train_cmd.main(list(args))
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out[out.index("{") :])


@pytest.mark.slow
def test_two_worker_ddp_run_reports_metrics_and_checkpoints(ray_local, tmp_path, capsys):
    # Global-batch BatchNorm through the real Ray Train worker group (test_distributed.py checks its maths).
    sweep = _sweep(tmp_path, **{"train.sync_batchnorm": True})
    summary = _run(capsys, "--sweep", sweep, "--storage", str(tmp_path / "runs"), "--workers", "2")
    for stage in ("stage1", "stage2"):
        m = summary[stage]
        assert m["status"] == "finished"
        for key in ("fid", "fidelity", "fidelity_shape", "d_loss", "g_loss", "kl", "images_per_second"):
            assert key in m, (stage, key)
        assert pathlib.Path(m["checkpoint_path"], checkpoint.MARKER).exists()
        assert pathlib.Path(m["sample_grid"]).read_bytes()[:4] == b"\x89PNG"
    _, meta = checkpoint.load(summary["stage2"]["checkpoint_path"])
    assert meta.stage1_checkpoint == summary["stage1_checkpoint"]
    assert meta.architecture["stage2"]["image_size"] == 32 and meta.config["spec"]["train"]["sync_batchnorm"] is True


def _final_generator(run_dir: pathlib.Path) -> dict:
    state, _ = checkpoint.load(checkpoint.latest(stage_run(str(run_dir))))
    return state["generator"]


@pytest.mark.slow
def test_interrupted_and_resumed_run_ends_with_identical_weights(ray_local, tmp_path, capsys):
    sweep = _sweep(tmp_path, **{"train.deterministic": True, "train.keep_checkpoints": 3})
    _run(capsys, "--sweep", sweep, "--storage", str(tmp_path / "a"), "--stage", "1", "--epochs-stage1", "3")
    # Interrupted after epoch 1's checkpoint, then the same command resumes to epoch 3.
    _run(capsys, "--sweep", sweep, "--storage", str(tmp_path / "b"), "--stage", "1", "--epochs-stage1", "1")
    resumed = _run(capsys, "--sweep", sweep, "--storage", str(tmp_path / "b"), "--stage", "1", "--epochs-stage1", "3")
    assert resumed["stage1"]["epoch"] == 3
    # Its cost carries on from the checkpoint it resumed from, instead of starting again from zero.
    run_b = stage_run(str(tmp_path / "b" / "tiny" / "train" / "stage1"))
    before, after = (json.loads(storage.read_bytes(run_b.metrics(e))) for e in (1, 2))
    assert after["started_at"] > before["reported_at"]  # epoch 2 ran in the second process
    assert after["wall_seconds"] >= before["wall_seconds"] + after["epoch_seconds"] - 0.01  # both are rounded
    assert after["cpu_seconds"] > before["cpu_seconds"]
    a = _final_generator(tmp_path / "a" / "tiny" / "train" / "stage1")
    b = _final_generator(tmp_path / "b" / "tiny" / "train" / "stage1")
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_a_run_killed_between_its_last_checkpoint_and_its_metrics_resumes_as_finished(ray_local, tmp_path, capsys):
    # The checkpoint uploads in the background and the evaluation's metrics are written after it: a node lost in
    # between (1 chaos soak of 4 here) leaves a complete epoch-2 checkpoint and metrics up to epoch 1.
    sweep = _sweep(tmp_path)
    args = ("--sweep", sweep, "--storage", str(tmp_path / "runs"), "--stage", "1", "--epochs-stage1", "2")
    finished = _run(capsys, *args)["stage1"]
    run = stage_run(str(tmp_path / "runs" / "tiny" / "train" / "stage1"))
    storage.delete(run.metrics(2))
    storage.write_bytes(run.latest_metrics, storage.read_bytes(run.metrics(1)))
    resumed = _run(capsys, *args)["stage1"]
    # Before: the restored run reported epoch 1's evaluation ("running") as its final one, and epoch 2 had no row.
    assert resumed["status"] == "finished" and resumed["epoch"] == 2
    assert resumed["checkpoint_path"] == finished["checkpoint_path"] and resumed["fid"] == finished["fid"]
    assert json.loads(storage.read_bytes(run.metrics(2))) == resumed


@pytest.mark.slow
def test_stage2_starts_from_a_stage1_checkpoint_uri_on_s3(ray_local, s3, tmp_path, capsys):
    storage_uri = f"s3://{s3.bucket}/train-test"
    first = _run(capsys, "--sweep", _sweep(tmp_path), "--storage", storage_uri, "--stage", "1", "--epochs-stage1", "1")
    ckpt = first["stage1_checkpoint"]
    assert ckpt.startswith("s3://") and checkpoint.is_complete(ckpt)
    second = _run(capsys, "--sweep", _sweep(tmp_path), "--storage", storage_uri, "--stage", "2",
                  "--stage1-checkpoint", ckpt, "--name", "stage2-only")
    assert second["stage2"]["status"] == "finished"
    _, meta = checkpoint.load(second["stage2"]["checkpoint_path"])
    assert meta.stage1_checkpoint == ckpt
    assert storage.exists(second["stage2"]["sample_grid"])


@pytest.mark.slow
def test_absurd_learning_rate_ends_the_run_as_diverged(ray_local, tmp_path, capsys):
    sweep = _sweep(tmp_path, **{"stage1.search.lr_d.default": 50.0, "stage1.search.lr_d.high": 100.0,
                                "stage1.search.lr_g.default": 50.0, "stage1.search.lr_g.high": 100.0,
                                "train.divergence": {"collapse_steps": 5, "collapse_loss": 1e-3}})
    code = train_cmd.main(["--sweep", sweep, "--storage", str(tmp_path / "runs"), "--stage", "1"])
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") :])
    assert code == 1, "a diverged Stage-I leaves no checkpoint for Stage-II"
    assert summary["stage1"]["status"] == "diverged"
    assert summary["stage1"]["fid"] == 1e6
    assert summary["stage1"]["reason"]


@pytest.mark.parametrize(
    "override,field",
    [
        ({"stage1.search.lr_g.low": 0.0}, "stage1.search.lr_g.low"),
        ({"train.batch_size": "big"}, "train.batch_size"),
        ({"model.profile": "huge"}, "model.profile"),
        ({"stage2.search.z_dim": 3}, "stage2.search.z_dim"),
        ({"data.colour": "red"}, "data.colour"),
    ],
)
def test_bad_sweep_is_rejected_before_ray_starts(tmp_path, override, field):
    out = subprocess.run([sys.executable, "harness/train.py", "--sweep", _sweep(tmp_path, **override), "--storage",
                          str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], out.stderr
    assert "Ray" not in out.stderr and not (tmp_path / "runs").exists()
