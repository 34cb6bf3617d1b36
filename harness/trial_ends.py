"""How each Tune run of a sweep ended, trial by trial, against what it planned.

A phase's search plans ``search.num_samples`` trials and its confirmation runs plan every candidate x every
confirmation seed. A sweep that was interrupted and resumed must still end with that many; when it does not, the
terminal (after each Tune run) and the report say how many and why, rather than ranking what is left in silence.

Each trial that wrote a params.json ends one way (``Ending``). Two of them are told apart only with what Tune
knew when its run ended (``TuneRunOutcome``, kept in sweep.json): a trial Tune never recorded trained while a
driver died before Tune saved it, and the resumed run trained another in its place (interrupted); a trial Tune
gave up on after ``search.max_failures`` failures failed.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING

from harness.phase import Phase, Source, phases
from harness.results import last_by_trial

if TYPE_CHECKING:  # sweep_record imports this module's TuneRunOutcome
    from harness.config import SweepConfig
    from harness.sweep_record import SweepRecord


class Ending(enum.StrEnum):
    FINISHED = "finished"  # trained its whole budget
    STOPPED = "stopped early"  # the scheduler (ASHA, the median rule) or the time budget ended it
    DIVERGED = "diverged"  # ended by the divergence guard: a result, the worst
    NO_RESULT = "stopped before its first evaluation"  # Tune ended it (the time budget) before it reported
    FAILED = "failed"  # Tune gave up after search.max_failures failures
    INTERRUPTED = "interrupted"  # trained while a driver died, before Tune saved it: Tune never counted it


# The endings that are a result of the trial's config. A search trial stopped early is one (ASHA ranks it at its
# rung); a confirmation run is one only at its whole budget (rank_confirmed scores runs that finished).
DONE = {Source.SEARCH: (Ending.FINISHED, Ending.STOPPED, Ending.DIVERGED),
        Source.CONFIRM: (Ending.FINISHED, Ending.DIVERGED)}


@dataclasses.dataclass(frozen=True)
class TuneRunOutcome:
    """What Tune knew when one of the sweep's Tune runs returned: its trials' ids, and those that failed."""

    known: tuple[str, ...]
    failed: tuple[str, ...] = ()

    @classmethod
    def of(cls, result_grid) -> TuneRunOutcome:
        """From the ResultGrid that ``Tuner.fit`` returned (every Result's metrics carry its trial id)."""
        results = list(result_grid)
        return cls(known=tuple(sorted(r.metrics["trial_id"] for r in results)),
                   failed=tuple(sorted(r.metrics["trial_id"] for r in results if r.error is not None)))

    def to_json(self) -> dict:
        return {"known": list(self.known), "failed": list(self.failed)}

    @classmethod
    def from_json(cls, data: dict) -> TuneRunOutcome:
        return cls(known=tuple(data["known"]), failed=tuple(data["failed"]))


def ending(last: dict, phase: Phase, outcome: TuneRunOutcome | None) -> Ending:
    """How one trial ended, from its last evaluation (a results row) and, when recorded, Tune's outcome. A joint
    trial's Stage-I "finished" is not the trial's: only its final stage's is."""
    trial_id = last["trial_id"]
    if outcome is not None and trial_id not in outcome.known:
        return Ending.INTERRUPTED
    if outcome is not None and trial_id in outcome.failed:
        return Ending.FAILED
    if last["status"] == "diverged":
        return Ending.DIVERGED
    if last["status"] == "finished" and last["stage"] == phase.final_stage:
        return Ending.FINISHED
    return Ending.STOPPED


@dataclasses.dataclass(frozen=True)
class RunEnds:
    """One Tune run's trials by how they ended, against the number it planned."""

    phase: Phase
    source: Source
    planned: int
    counts: dict[Ending, int]
    budget_ended: bool = False  # the sweep's time budget ended the run
    scheduler: str = "none"  # what stopped trials early, besides the time budget

    @property
    def done(self) -> int:
        return sum(self.counts.get(e, 0) for e in DONE[self.source])

    @property
    def complete(self) -> bool:
        return self.done >= self.planned

    def line(self) -> str:
        """One sentence for the terminal and the report, e.g. "Stage-I search: 2 of 2 planned trials done
        (1 finished, 1 stopped early by asha); 1 more was interrupted when a driver died and not counted."."""
        kind = "trials" if self.source is Source.SEARCH else "confirmation runs"
        run = "search" if self.source is Source.SEARCH else "confirmation"
        parts = [f"{self.counts[e]} {e}" + (self._stopped_by() if e is Ending.STOPPED else "")
                 for e in DONE[self.source] if self.counts.get(e)]
        text = f"{self.phase.title} {run}: {self.done} of {self.planned} planned {kind} done"
        text += f" ({', '.join(parts)})" if parts else ""
        why = []
        if self.source is Source.CONFIRM and self.counts.get(Ending.STOPPED):
            why.append(f"{self.counts[Ending.STOPPED]} stopped early{self._stopped_by()} (a confirmation run counts "
                       "only at its whole budget)")
        if self.counts.get(Ending.NO_RESULT):
            why.append(f"{self.counts[Ending.NO_RESULT]} {Ending.NO_RESULT}")
        if self.counts.get(Ending.FAILED):
            why.append(f"{self.counts[Ending.FAILED]} failed (search.max_failures reached; their error.txt says why)")
        started = sum(n for e, n in self.counts.items() if e is not Ending.INTERRUPTED)
        if self.planned > started:
            because = ("the time budget ended the run first" if self.budget_ended
                       else "the run ended before they started; run it again with --resume")
            why.append(f"{self.planned - started} never ran ({because})")
        if self.counts.get(Ending.INTERRUPTED):
            n = self.counts[Ending.INTERRUPTED]
            why.append(f"{n} more {'was' if n == 1 else 'were'} interrupted when a driver died and not counted")
        return text + ("; " + "; ".join(why) if why else "") + "."

    def _stopped_by(self) -> str:
        stoppers = ([self.scheduler] if self.scheduler != "none" else []) + (["the time budget"] if self.budget_ended
                                                                              else [])
        return f" by {' or '.join(stoppers)}" if stoppers else ""


def run_ends(rows: list[dict], phase: Phase, source: Source, planned: int, outcome: TuneRunOutcome | None,
             budget_ended: bool, scheduler: str) -> RunEnds:
    """Counts the endings of ``phase``'s ``source`` runs among results ``rows`` (every evaluation of the sweep).
    A trial Tune knew but that never evaluated (it failed first, or was stopped before its first epoch) counts from
    ``outcome`` alone. Without an outcome (a sweep recorded before they were kept) no trial reads as interrupted or
    failed: a trial a dead driver cut off reads as stopped early."""
    last = last_by_trial([r for r in rows if r["phase"] == phase and r["source"] == source])
    counts: dict[Ending, int] = {}
    for row in last.values():
        e = ending(row, phase, outcome)
        counts[e] = counts.get(e, 0) + 1
    if outcome is not None:
        for trial_id in set(outcome.known) - set(last):
            e = Ending.FAILED if trial_id in outcome.failed else Ending.NO_RESULT
            counts[e] = counts.get(e, 0) + 1
    return RunEnds(phase, source, planned, counts, budget_ended, scheduler if source is Source.SEARCH else "none")


def sweep_run_ends(sweep: SweepConfig, record: SweepRecord, rows: list[dict]) -> list[RunEnds]:
    """Every Tune run the sweep has started (it left results or an outcome), in the order the sweep runs them."""
    out = []
    for phase in phases(sweep.search.strategy):
        for source in (Source.SEARCH, Source.CONFIRM):
            name = phase.tune_run(source)
            outcome = record.tune_outcomes.get(name)
            if outcome is None and not any(r["phase"] == phase and r["source"] == source for r in rows):
                continue
            out.append(tune_run_ends(sweep, record, rows, phase, source))
    return out


def tune_run_ends(sweep: SweepConfig, record: SweepRecord, rows: list[dict], phase: Phase, source: Source) -> RunEnds:
    """One Tune run's endings: the search plans search.num_samples trials, the confirmation every candidate x seed."""
    name = phase.tune_run(source)
    planned = (sweep.search.num_samples if source is Source.SEARCH
               else len(record.confirm_candidates.get(phase, [])) * sweep.search.confirm.seeds)
    return run_ends(rows, phase, source, planned, record.tune_outcomes.get(name), name in record.budget_ended,
                    sweep.search.scheduler)
