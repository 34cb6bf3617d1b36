"""sweep.json: a SweepRecord round-trips, and a record of another schema is refused in one line."""

from __future__ import annotations

import json

import pytest

from harness import storage
from harness.config import sweep_from_dict
from harness.errors import HarnessError
from harness.phase import Phase
from harness.sweep_record import SweepRecord
from harness.trial_ends import TuneRunOutcome


def test_a_record_round_trips_with_its_phases_typed(tmp_path):
    uri = str(tmp_path / "sweep.json")
    record = SweepRecord.new(sweep_from_dict({"name": "r", "search": {"objective_window": 3}}), seed=11)
    record.confirm_candidates[Phase.STAGE1] = [{"lr_g": 2e-4}, {"lr_g": 1e-3}]
    record.stage1_parents, record.budget_ended, record.wall_seconds = ["s3://b/ckpt"], ["stage1-confirm"], 12.5
    record.tune_outcomes["stage1"] = TuneRunOutcome(known=("a", "b"), failed=("b",))
    record.save(uri)
    back = SweepRecord.load(uri)
    assert back == record and back.sweep.objective.window == 3
    assert list(back.confirm_candidates) == [Phase.STAGE1] and isinstance(next(iter(back.confirm_candidates)), Phase)
    assert json.loads(storage.read_bytes(uri))["schema"] == 2


def test_a_record_of_the_previous_version_is_refused_in_one_line(tmp_path):
    uri = str(tmp_path / "sweep.json")
    # What the harness wrote before SweepRecord: no schema, a key per phase for its candidates.
    old = {"sweep": {"name": "r"}, "seed": 3, "started": 0.0, "stage1_confirm_candidates": [{}]}
    storage.write_bytes(uri, json.dumps(old).encode())
    with pytest.raises(HarnessError, match=r"sweep.json: sweep record schema 1, this harness reads 2; .* under a new name$"):
        SweepRecord.load(uri)
    storage.write_bytes(uri, b"{not json")
    with pytest.raises(HarnessError, match=r"sweep.json: not valid JSON"):
        SweepRecord.load(uri)


def test_a_record_written_before_tune_outcomes_were_kept_reads_with_none(tmp_path):
    uri = str(tmp_path / "sweep.json")
    record = SweepRecord.new(sweep_from_dict({"name": "r"}), seed=1)
    data = record.to_json()
    del data["tune_outcomes"], data["tracking_stopped"]
    storage.write_bytes(uri, json.dumps(data).encode())
    back = SweepRecord.load(uri)
    assert back.tune_outcomes == {} and back.tracking_stopped is None
