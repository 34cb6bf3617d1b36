"""Checkpoints: complete or absent, exact round trip, retention of the last k plus the best."""

from __future__ import annotations

import json

import pytest
import torch

from harness import checkpoint, storage
from harness.errors import StorageError
from harness.objective import Objective
from harness.run_layout import stage_run


def _state(v: float) -> dict:
    return {"generator": {"w": torch.full((3,), v)}, "rng": torch.get_rng_state(), "epoch_note": int(v)}


def _meta(stage: int = 1, metrics: dict | None = None, config: dict | None = None) -> checkpoint.CheckpointMeta:
    return checkpoint.CheckpointMeta(stage=stage, metrics=metrics or {}, config=config or {}, architecture={},
                                     objective_history=[])


def _save(run, epoch: int, state: dict, meta: checkpoint.CheckpointMeta) -> str:
    return checkpoint.write(run, epoch, checkpoint.serialize(state), meta)


def test_round_trip_is_exact_and_loads_with_weights_only(tmp_path):
    run = stage_run(str(tmp_path / "run"))
    state = _state(1.5)
    ckpt = _save(run, 1, state, _meta(metrics={"fid": 3.0}, config={"a": 1, "stage1_checkpoint": "s1"}))
    loaded, meta = checkpoint.load(ckpt)
    assert torch.equal(loaded["generator"]["w"], state["generator"]["w"])
    assert torch.equal(loaded["rng"], state["rng"])
    assert meta.epoch == 1 and meta.config["a"] == 1 and len(meta.code_version) == 16 and meta.saved_at > 0
    assert meta.stage1_checkpoint == "s1" and meta.metrics == {"fid": 3.0}


def test_a_meta_of_another_schema_is_refused_in_one_line(tmp_path):
    run = stage_run(str(tmp_path / "run"))
    ckpt = _save(run, 1, _state(1), _meta())
    old = json.loads((tmp_path / "run" / "checkpoints" / "epoch-0001" / "meta.json").read_text())
    del old["schema"], old["objective_history"]  # as the harness wrote it before CheckpointMeta
    (tmp_path / "run" / "checkpoints" / "epoch-0001" / "meta.json").write_text(json.dumps(old))
    with pytest.raises(StorageError, match=r"meta.json: checkpoint meta schema 1, this harness reads 2"):
        checkpoint.load(ckpt)


def test_a_checkpoint_without_its_marker_is_never_loaded(tmp_path):
    run = stage_run(str(tmp_path / "run"))
    _save(run, 1, _state(1), _meta())
    ckpt2 = _save(run, 2, _state(2), _meta())
    (tmp_path / "run" / "checkpoints" / "epoch-0002" / checkpoint.MARKER).unlink()  # upload killed before the marker
    assert checkpoint.latest(run).endswith("epoch-0001")
    with pytest.raises(StorageError, match="not a complete checkpoint"):
        checkpoint.load(ckpt2)


def test_retention_keeps_last_k_and_the_best(tmp_path):
    run = stage_run(str(tmp_path / "run"))
    for epoch, fid in enumerate([5.0, 1.0, 4.0, 3.0, 6.0], start=1):
        _save(run, epoch, _state(epoch), _meta(metrics={"fid": fid}))
        checkpoint.prune(run, keep=2, objective=Objective("fid"))
    names = [c.rsplit("/", 1)[-1] for c in checkpoint.list_complete(run)]
    assert names == ["epoch-0002", "epoch-0004", "epoch-0005"]
    assert checkpoint.best(run, Objective("fid")).endswith("epoch-0002")


def test_round_trip_on_the_s3_endpoint(s3):
    run = stage_run(f"s3://{s3.bucket}/ckpt-test/run")
    ckpt = _save(run, 3, _state(7), _meta(stage=2, metrics={"fid": 1.0}))
    loaded, meta = checkpoint.load(ckpt)
    assert torch.equal(loaded["generator"]["w"], torch.full((3,), 7.0)) and meta.stage == 2
    assert checkpoint.latest(run) == ckpt
    assert json.loads(storage.read_bytes(f"{ckpt}/meta.json"))["epoch"] == 3


def test_async_writer_saves_the_state_as_it_was_at_submit(tmp_path):
    run = stage_run(str(tmp_path / "run"))
    weights = torch.zeros(1000)
    writer = checkpoint.AsyncCheckpointWriter()
    ckpt = writer.submit(run, 1, {"w": weights, "opt": {"state": {0: {"m": weights * 2}}, "lr": [0.1]}},
                         _meta(metrics={"fid": 3.0}))
    weights += 5.0  # training moves on while the upload runs
    writer.wait()
    writer.close()
    state, meta = checkpoint.load(ckpt)
    assert torch.equal(state["w"], torch.zeros(1000)) and state["opt"]["lr"] == [0.1]
    assert meta.epoch == 1 and checkpoint.latest(run) == ckpt
