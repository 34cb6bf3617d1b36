"""How a sweep's search did against random sampling, from its own trials: one sentence under each search table.

The search's trials are taken in the order they were launched (its first ones are the sweep's start points, the
paper defaults first: the search is credited with them, as it ships them): it reached its best value with its
k-th trial, having spent Z trial-epochs. Against that, the same trials are put in random orders, RESAMPLES times:
- a permutation test of the time to the best: the trial-epochs a random order needs to reach the same value, and
  the share of orders that get there within Z. An order no better than chance is matched by about half of them;
  5 % or fewer is beyond chance, which takes at least 20 trials (a random order puts the best first in 1 of n);
- at a budget fixed in advance, half the trials: the search's best so far against the best of that many trials
  taken at random.

Random orders of the search's own trials are a generous baseline: where a sampler steered its later trials
towards a good region, those trials are in the pool random sampling draws from. So "the search beat random" here
is a conservative verdict; "it did not" means its order bought nothing over these configs.
A diverged trial costs its epochs but is never the best, as in the table, which ranks it last.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harness.objective import Objective
from harness.report.fmt import fmt

MIN_TRIALS = 4  # fewer trials cannot tell an order from luck
RESAMPLES = 2000
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class SearchVsRandom:
    trials: int  # the search trials with a value
    trial_epochs: int  # what they trained together, every stage counted
    best: float  # the search's best value
    best_after_trials: int  # k: the launch position of the first trial that reached it
    best_after_epochs: int  # Z: the trial-epochs spent up to and including that trial
    random_epochs_to_best: float  # the median trial-epochs a random order of these trials needs to reach `best`
    share_random_as_soon: float  # the share of random orders that reach `best` within Z trial-epochs
    half: int  # half the trials, rounded down
    search_best_at_half: float  # the search's best over its first `half` trials
    random_best_at_half: float  # the median best of `half` of these trials taken at random
    random_best_at_half_iqr: tuple[float, float]

    @property
    def can_show_beyond_chance(self) -> bool:
        """Whether any order could be beyond chance: a random order puts the best first in 1 of n."""
        return 1 / self.trials <= ALPHA

    @property
    def beyond_chance(self) -> bool:
        return self.share_random_as_soon <= ALPHA

    def sentence(self, objective: Objective) -> str:
        lo, hi = self.random_best_at_half_iqr
        if not self.can_show_beyond_chance:
            chance = f"with {self.trials} trials no order can show more than chance; it takes 20"
        elif self.beyond_chance:
            chance = "beyond chance"
        else:
            chance = "within chance; 5 % or fewer would be beyond it"
        return (f"Against random sampling over its own {self.trials} trials: the search reached its best "
                f"({objective.key} {fmt(self.best)}) after {self.best_after_epochs} "
                f"trial-epoch{'s' if self.best_after_epochs != 1 else ''}, at its trial "
                f"{self.best_after_trials}; random orders of the same trials need a median "
                f"{fmt(self.random_epochs_to_best)}, and {self.share_random_as_soon * 100:.0f} % of {RESAMPLES} get "
                f"there as soon ({chance}). After half the trials ({self.half}) it had "
                f"{fmt(self.search_best_at_half)}; {self.half} of these trials at random reach a median "
                f"{fmt(self.random_best_at_half)} (IQR {fmt(lo)} to {fmt(hi)}).")


def too_few_sentence(trials: int) -> str:
    return (f"{trials} search trial{'s' if trials != 1 else ''} with a value: too few to compare the search with "
            f"random sampling ({MIN_TRIALS} needed).")


def vs_random_note(vs: SearchVsRandom | None, ranked: list[dict], objective: Objective) -> str:
    """A search table's sentence on its search against random sampling; empty for a table with no trials."""
    if vs is not None:
        return vs.sentence(objective)
    if not ranked:
        return ""
    if len(ranked) >= MIN_TRIALS:  # enough trials: none of them reached a value, or their rows carry no launch times
        return ("No comparison with random sampling: the search trials' launch times are not recorded (an older "
                "harness), or every trial diverged.")
    return too_few_sentence(len(ranked))


def search_vs_random(ranked: list[dict], phase_rows: list[dict], objective: Objective,
                     seed: int = 0) -> SearchVsRandom | None:
    """``ranked``: one phase's search trials as the report ranks them (build.rank_trials: each trial's best
    evaluation at the phase's final stage and its ``final_status``); ``phase_rows``: every results row of those
    trials, of every stage, which give each trial's launch and its trial-epochs. None with fewer than MIN_TRIALS
    trials, or when none has a value that can be the best."""
    started: dict[str, float] = {}
    stage_epochs: dict[str, dict[int, int]] = {}  # trial -> stage -> its last epoch
    for r in phase_rows:
        tid = r["trial_id"]
        t = r.get("started_at")
        if isinstance(t, (int, float)):  # a resumed run restarts its clock, and each stage has its own: the earliest
            started[tid] = min(started.get(tid, t), t)
        stages = stage_epochs.setdefault(tid, {})
        stages[r["stage"]] = max(stages.get(r["stage"], 0), int(r["epoch"]))
    trials = [e for e in ranked if e["trial_id"] in started and objective.value_of(e) is not None]
    if len(trials) < MIN_TRIALS:
        return None
    trials.sort(key=lambda e: (started[e["trial_id"]], e["trial_id"]))
    # Larger is better below: sort_key is ascending-best, so its negation orders every objective the same way.
    score = np.array([-np.inf if e["final_status"] == "diverged" else -objective.sort_key(objective.value_of(e))
                      for e in trials])
    if not np.isfinite(score).any():
        return None
    cost = np.array([sum(stage_epochs[e["trial_id"]].values()) for e in trials])
    k = int(np.argmax(score)) + 1  # argmax takes the first of ties
    z = int(cost[:k].sum())
    rng = np.random.default_rng(seed)
    orders = np.array([rng.permutation(len(trials)) for _ in range(RESAMPLES)])
    first_best = np.argmax(score[orders] >= score[k - 1], axis=1)  # each order's first position that reaches it
    epochs_to_best = np.cumsum(cost[orders], axis=1)[np.arange(RESAMPLES), first_best]
    half = len(trials) // 2
    best_of_half = score[orders[:, :half]].max(axis=1)
    # "nearest": every figure is a value some trial had (a diverged one's -inf is never between two others).
    q25, q50, q75 = np.percentile(best_of_half, [25, 50, 75], method="nearest")
    value = (lambda s: -float(s)) if objective.lower_is_better else float
    low, high = sorted((value(q25), value(q75)))
    return SearchVsRandom(trials=len(trials), trial_epochs=int(cost.sum()), best=value(score[k - 1]),
                          best_after_trials=k, best_after_epochs=z,
                          random_epochs_to_best=float(np.median(epochs_to_best)),
                          share_random_as_soon=float(np.mean(epochs_to_best <= z)), half=half,
                          search_best_at_half=value(score[:half].max()), random_best_at_half=value(q50),
                          random_best_at_half_iqr=(low, high))
