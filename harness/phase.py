"""The phases of a sweep, and the two kinds of run in each.

A sweep is one or two phases, each a Tune search and (with ``search.confirm``) a Tune run of
confirmation runs after it:

- ``staged``: ``stage1`` (Stage-I trials), then ``stage2`` (Stage-II trials, each refining one of
  the top Stage-I checkpoints);
- ``joint``: one phase whose trials train Stage-I, then Stage-II, with their own values for both.

Phases and sources are string enums: their values are the words stored in a trial's params.json, in
results rows, in Tune's run directories and in the Optuna study names, so files stay readable and a
row's ``phase`` compares equal to its Phase.
"""

from __future__ import annotations

import enum

from harness.errors import ConfigError


class Source(enum.StrEnum):
    """Where a run comes from: a search trial (one seed, at the search budget) or a confirmation run
    (a chosen config trained again with a fresh seed, at the full budget)."""

    SEARCH = "search"
    CONFIRM = "confirm"


class Phase(enum.StrEnum):
    STAGE1 = "stage1"
    STAGE2 = "stage2"
    JOINT = "joint"

    @property
    def stages(self) -> tuple[int, ...]:
        """The stages one trial of the phase trains, in order."""
        return {Phase.STAGE1: (1,), Phase.STAGE2: (2,), Phase.JOINT: (1, 2)}[self]

    @property
    def final_stage(self) -> int:
        """The stage a trial of the phase ends with: the one it is ranked by."""
        return self.stages[-1]

    @property
    def title(self) -> str:
        return {Phase.STAGE1: "Stage-I", Phase.STAGE2: "Stage-II", Phase.JOINT: "joint"}[self]

    def tune_run(self, source: Source) -> str:
        """The name of the phase's Tune run for ``source`` (under <sweep>/tune/)."""
        return str(self) if Source(source) is Source.SEARCH else f"{self}-confirm"

    def epochs(self, sweep, source: Source) -> int:
        """Epochs one run of the phase trains, over all its stages (the stages' budgets for ``source``)."""
        return sum(sweep.stage(s).budget(source) for s in self.stages)


STRATEGIES = {"staged": (Phase.STAGE1, Phase.STAGE2), "joint": (Phase.JOINT,)}


def phases(strategy: str) -> tuple[Phase, ...]:
    """A strategy's phases, in the order a sweep runs them."""
    try:
        return STRATEGIES[strategy]
    except KeyError:
        raise ConfigError(f"strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}") from None


def final_phase(strategy: str) -> Phase:
    """The phase whose configs a sweep's leaderboard ranks."""
    return phases(strategy)[-1]


def reached_phase(strategy: str, present) -> Phase | None:
    """The last of the strategy's phases that has results among ``present`` (phase words of results
    rows): what the report of a sweep, finished or interrupted, ranks. None when none has any."""
    reached = [p for p in phases(strategy) if p in set(present)]
    return reached[-1] if reached else None
