"""sweep.json: what a sweep decided while it ran, so that a resumed sweep decides the same.

Written at the sweep's start and after each decision (the configs each phase confirms, the Stage-I
checkpoints Stage-II starts from, the Tune runs its time budget ended), read back by ``--resume``,
by the report command and by the nightly leaderboard. It carries a schema version: a file of
another version is refused in one line rather than read by guesswork.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import time

from harness import storage
from harness.config import SweepConfig, sweep_from_dict
from harness.errors import HarnessError
from harness.phase import Phase
from harness.trial_ends import TuneRunOutcome

SCHEMA = 2  # 1: the untyped record before this module (no "schema" key)


def derive_seed(seed: int | None, day: datetime.date | None = None) -> int:
    """The sweep's seed, or one derived from the date: a resumed persistent study with a fixed seed
    replays the same start-up configurations every night (docs/DESIGN.md), so the default varies by day."""
    if seed is not None:
        return seed
    day = day or datetime.date.today()
    return int(hashlib.sha256(day.isoformat().encode()).hexdigest()[:8], 16)


@dataclasses.dataclass
class SweepRecord:
    sweep: SweepConfig
    seed: int  # the searcher's seed (derived from the date when the sweep file gives none)
    started: float  # time.time() at the first start
    # Per phase, the configs its confirmation runs train (the paper defaults first), fixed once chosen.
    confirm_candidates: dict[Phase, list[dict]] = dataclasses.field(default_factory=dict)
    stage1_parents: list[str] = dataclasses.field(default_factory=list)  # staged: Stage-II's parent checkpoints
    budget_ended: list[str] = dataclasses.field(default_factory=list)  # Tune runs the time budget stopped
    wall_seconds: float | None = None  # set when the sweep has ended
    tracking_stopped: str | None = None  # why MLflow tracking stopped during the sweep (the report says so)
    # Per Tune run (its name), the trials Tune knew when the run returned: trial_ends.py tells from it the trials a
    # dead driver left behind (interrupted and replaced) and those Tune gave up on.
    tune_outcomes: dict[str, TuneRunOutcome] = dataclasses.field(default_factory=dict)

    @classmethod
    def new(cls, sweep: SweepConfig, seed: int | None = None) -> SweepRecord:
        """A record for a sweep starting now; its seed is ``seed``, else the sweep file's, else the date's."""
        return cls(sweep=sweep, seed=derive_seed(sweep.search.seed if seed is None else seed), started=time.time())

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "sweep": dataclasses.asdict(self.sweep), "seed": self.seed, "started": self.started,
                "confirm_candidates": {str(p): c for p, c in self.confirm_candidates.items()},
                "stage1_parents": self.stage1_parents, "budget_ended": self.budget_ended,
                "wall_seconds": self.wall_seconds, "tracking_stopped": self.tracking_stopped,
                "tune_outcomes": {name: o.to_json() for name, o in self.tune_outcomes.items()}}

    def save(self, uri: str) -> None:
        storage.write_bytes(uri, json.dumps(self.to_json(), indent=2, default=str).encode())

    @classmethod
    def load(cls, uri: str) -> SweepRecord:
        try:
            data = json.loads(storage.read_bytes(uri))
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{uri}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
        version = data.get("schema", 1) if isinstance(data, dict) else None
        if version != SCHEMA:
            raise HarnessError(f"{uri}: sweep record schema {version}, this harness reads {SCHEMA}; report or resume "
                               f"it with the harness version that wrote it, or start the sweep under a new name")
        return cls(sweep=sweep_from_dict(data["sweep"]), seed=int(data["seed"]), started=float(data["started"]),
                   confirm_candidates={Phase(p): c for p, c in data["confirm_candidates"].items()},
                   stage1_parents=list(data["stage1_parents"]), budget_ended=list(data["budget_ended"]),
                   wall_seconds=data["wall_seconds"], tracking_stopped=data.get("tracking_stopped"),
                   # absent from records of sweeps run before it was kept: their trials' endings go without it
                   tune_outcomes={name: TuneRunOutcome.from_json(o)
                                  for name, o in data.get("tune_outcomes", {}).items()})
