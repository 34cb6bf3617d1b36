"""The cross-night leaderboard of a nightly sweep, under <root>/leaderboard/.

    nights.parquet   one row per night: its best trial and value, the all-time best after it,
                     cost (CPU-/GPU-hours), quality per hour, the regression flag, its report
    trials.parquet   one row per trial per night, with its own cost and quality per hour
    leaderboard.md / leaderboard.html   both tables, the trend plot, a regression banner
    trend.png        best value per night and the all-time best (pages drawn by harness/report/nightly_board.py)
    best/            the all-time best checkpoint (stage2/ and the stage1/ it refines), best.json
    nights.parquet.lease / .lock   held while a night writes these, one night at a time (journal_lease.exclusive;
                     the local .lock file stays)

Quality is Objective.quality: the objective for objectives to maximise (caption fidelity, Inception Score)
and 1 / objective for FID and KID, so "quality per GPU-hour" is larger when better for every objective. A KID at
or below zero (the unbiased estimate's noise around a perfect match) has no quality: its per-hour cells are empty.
"""

from __future__ import annotations

import dataclasses
import json

from harness import checkpoint, journal_lease, storage
from harness.errors import HarnessError
from harness.objective import Objective
from harness.report import Report
from harness.report.nightly_board import render_board
from harness.results import last_evaluations, read_parquet, write_parquet
from harness.run_layout import NightlyLayout, SweepLayout

# Columns every row of nights.parquet has; a file without them was written by an older harness.
NIGHT_COLUMNS = ("date", "sweep", "best_value", "best_ci_low", "best_ci_high", "best_seeds", "all_time_best")


def per_hour(q: float | None, hours: float) -> float | None:
    return None if q is None or hours <= 0 else q / hours


@dataclasses.dataclass(frozen=True)
class NightBest:
    """A night's best config: the mean over its confirmation seeds and the 95 % interval (a point when
    the night ran no confirmation runs: low == high == value, n == 1)."""

    value: float
    low: float
    high: float
    n: int

    @classmethod
    def of_row(cls, night: dict) -> NightBest:
        return cls(night["best_value"], night["best_ci_low"], night["best_ci_high"], night["best_seeds"])

    def overlaps(self, other: NightBest) -> bool:
        return self.low <= other.high and other.low <= self.high


def is_regression(tonight: NightBest, all_time_before: NightBest | None, objective: Objective, margin: float) -> bool:
    """Tonight is clearly worse than the best of all earlier nights: the two 95 % intervals do not
    overlap, and tonight's mean is worse by more than ``margin`` (relative). Overlapping intervals
    are seed noise, not a regression, however far apart the means."""
    if all_time_before is None or tonight.overlaps(all_time_before):
        return False
    if objective.lower_is_better:
        return tonight.value > all_time_before.value * (1 + margin)
    return tonight.value < all_time_before.value * (1 - margin)


def tonights_best(report: Report, objective: Objective) -> tuple[NightBest, str, int]:
    """(tonight's best, the trial whose checkpoint represents it, its stage): the best confirmed config
    by mean when the sweep ran confirmation runs, else the best search trial as a point."""
    best = report.ranked[0]  # rank_trials puts diverged trials last
    if report.confirmed:
        c = report.confirmed[0]
        return NightBest(c.summary.mean, c.summary.low, c.summary.high, c.summary.n), c.best_trial, best["stage"]
    value = objective.value_of(best)
    return NightBest(value, value, value, 1), best["trial_id"], best["stage"]


def trial_costs(rows: list[dict]) -> dict[str, dict[str, float]]:
    """CPU/GPU hours per trial: the sum over its stages' last evaluations."""
    out: dict[str, dict[str, float]] = {}
    for r in last_evaluations(rows):
        c = out.setdefault(r["trial_id"], {"cpu_hours": 0.0, "gpu_hours": 0.0})
        c["cpu_hours"] += float(r.get("cpu_seconds") or 0.0) / 3600
        c["gpu_hours"] += float(r.get("gpu_seconds") or 0.0) / 3600
    return out


@dataclasses.dataclass
class NightOutcome:
    date: str
    regression: bool
    all_time_best: float
    best_value: float
    leaderboard_uri: str
    promoted: bool


class Leaderboard:
    def __init__(self, root: str, sweep_name: str, objective: Objective, beside: tuple[str, ...] = ()) -> None:
        """``beside``: metrics shown and kept beside the objective (report.markdown.extra_columns)."""
        self.uri = NightlyLayout(root).leaderboard_dir
        self.sweep_name, self.objective, self.beside = sweep_name, objective, tuple(beside)

    def _read(self, name: str) -> list[dict]:
        uri = storage.join(self.uri, name)
        return read_parquet(uri) if storage.exists(uri) else []

    def _write(self, name: str, rows: list[dict]) -> None:
        write_parquet(rows, storage.join(self.uri, name))

    def nights(self) -> list[dict]:
        rows = self._read("nights.parquet")
        uri = storage.join(self.uri, "nights.parquet")
        others = sorted({r["sweep"] for r in rows} - {self.sweep_name})
        if others:
            raise HarnessError(f"{self.uri}: holds the nightly sweep {others[0]!r}, not {self.sweep_name!r}; "
                               "use one storage root per nightly sweep")
        for row in rows:
            missing = [c for c in NIGHT_COLUMNS if row.get(c) is None]
            if missing:
                raise HarnessError(f"{uri}: night {row.get('date')} has no {', '.join(missing)} (written by an older "
                                   "harness); move the file aside to start the leaderboard afresh")
            if row.get("objective") != self.objective.key:
                raise HarnessError(f"{uri}: night {row['date']} ranked by {row.get('objective')!r}, this sweep by "
                                   f"{self.objective.key!r}; nights of two objectives cannot share a leaderboard (use "
                                   "another storage root)")
        return sorted(rows, key=lambda r: r["date"])

    def record_night(self, date: str, report: Report, night: SweepLayout, wall_seconds: float, seed: int,
                     margin: float, budget_ended: list[str] = ()) -> NightOutcome:
        """Adds (or replaces) tonight's rows, judges regression, promotes a new all-time best, renders.

        The files are read, changed and written whole, so one night at a time does it: two nights that overlap on
        a database study would otherwise each write their copy over the other's row."""
        with journal_lease.exclusive(storage.join(self.uri, "nights.parquet"), f"night {date} of {self.sweep_name}",
                                     "the leaderboard", advice=f"record night {date} again with nightly.py --date "
                                     f"{date} --report-only"):
            return self._record_night(date, report, night, wall_seconds, seed, margin, budget_ended)

    def _record_night(self, date: str, report: Report, night: SweepLayout, wall_seconds: float, seed: int,
                      margin: float, budget_ended: list[str]) -> NightOutcome:
        if not report.ranked:
            raise HarnessError(f"{night.uri}: the night has no ranked trial")
        objective, key = self.objective, self.objective.key
        best = report.ranked[0]
        tonight, best_trial, final_stage = tonights_best(report, objective)
        costs = trial_costs(report.rows)
        trial_rows = []
        for e in report.ranked + report.stage1_ranked:  # a staged night's Stage-I trials cost too
            c = costs.get(e["trial_id"], {"cpu_hours": 0.0, "gpu_hours": 0.0})
            q = objective.quality(objective.value_of(e))
            trial_rows.append({"date": date, "sweep": self.sweep_name, "trial_id": e["trial_id"],
                               "phase": str(e["phase"]), "status": e["final_status"], "epoch": e["epoch"],
                               key: objective.value_of(e), **{m: e.get(m) for m in self.beside},
                               "cpu_hours": c["cpu_hours"], "gpu_hours": c["gpu_hours"],
                               "quality": q, "quality_per_gpu_hour": per_hour(q, c["gpu_hours"]),
                               "quality_per_cpu_hour": per_hour(q, c["cpu_hours"])})
        cpu_h = sum(c["cpu_hours"] for c in costs.values())
        gpu_h = sum(c["gpu_hours"] for c in costs.values())

        earlier = [n for n in self.nights() if n["date"] != date]
        before = self._best_night([n for n in earlier if n["date"] < date])
        all_time_before = NightBest.of_row(before) if before is not None else None
        value = tonight.value
        regression = is_regression(tonight, all_time_before, objective, margin)
        all_time = (tonight if all_time_before is None or objective.better(value, all_time_before.value)
                    else all_time_before)
        ckpt = checkpoint.best(night.trial(best_trial).stage(final_stage), objective)
        q = objective.quality(value)
        confirmed = report.confirmed[0] if report.confirmed else None
        night = {"date": date, "sweep": self.sweep_name, "objective": key, "mode": objective.mode,
                 "best_trial": best_trial, "best_value": value, "best_ci_low": tonight.low, "best_ci_high": tonight.high,
                 "best_seeds": tonight.n, "best_config": confirmed.config_id if confirmed else best["config_id"],
                 "best_verdict": confirmed.verdict.sentence if confirmed else None,
                 **{f"best_{m}": best.get(m) if confirmed is None else None for m in self.beside},
                 "all_time_best": all_time.value, "all_time_best_ci_low": all_time.low,
                 "all_time_best_ci_high": all_time.high, "regression": regression, "margin": margin,
                 "trials": len(costs), "cpu_hours": cpu_h, "gpu_hours": gpu_h, "wall_hours": wall_seconds / 3600,
                 "quality": q, "quality_per_gpu_hour": per_hour(q, gpu_h), "quality_per_cpu_hour": per_hour(q, cpu_h),
                 "seed": seed, "report": report.uri, "checkpoint": ckpt,
                 "ended_by": f"time budget ({', '.join(budget_ended)})" if budget_ended else "completed"}
        nights = sorted(earlier + [night], key=lambda n: n["date"])
        promoted = False
        best_night = self._best_night(nights)
        if ckpt is not None and best_night is not None and value == best_night["best_value"]:
            self.promote(ckpt, {"date": date, "trial_id": best_trial, key: value,
                                "ci": [tonight.low, tonight.high], "seeds": tonight.n})
            promoted = True
        self._write("nights.parquet", nights)
        self._write("trials.parquet", [r for r in self._read("trials.parquet") if r["date"] != date] + trial_rows)
        render_board(self.uri, self.sweep_name, objective, self.beside, nights, trial_rows, night)
        return NightOutcome(date, regression, all_time.value, value, storage.join(self.uri, "leaderboard.html"), promoted)

    def _best_night(self, nights: list[dict]) -> dict | None:
        return self.objective.best(nights, lambda n: n["best_value"])

    def promote(self, ckpt_uri: str, info: dict) -> None:
        """Copies the checkpoint (and the Stage-I checkpoint a Stage-II one refines) to best/.

        The old best's marker goes first and the new marker last, so best/ is never a loadable mix.
        """
        best_uri = storage.join(self.uri, "best")
        info_uri = storage.join(best_uri, "best.json")
        meta = checkpoint.read_meta(ckpt_uri)
        sources = {f"stage{meta.stage}": ckpt_uri}
        if meta.stage == 2 and meta.stage1_checkpoint:
            sources["stage1"] = meta.stage1_checkpoint
        if storage.exists(info_uri) and json.loads(storage.read_bytes(info_uri))["sources"] == sources:
            return  # already promoted (a night reported again): no need to copy gigabytes once more
        for name, src in sources.items():
            checkpoint.copy(src, storage.join(best_uri, name))
        storage.write_bytes(info_uri, json.dumps({**info, "sources": sources}, indent=2).encode())
