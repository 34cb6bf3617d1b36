"""How a sweep's search did against random sampling, from its own trials: one sentence under each search table.

The search's trials are taken in the order they were launched: the search reached its best value with its k-th
trial, having spent Z trial-epochs. Against that, the same trials are put in random orders, RESAMPLES times:
- the trial-epochs a random order needs to reach the same best, and the share of orders that get there in Z or
  fewer (a search whose order was no better than chance is beaten or matched by about half of them; 5 % or
  fewer is beyond chance);
- at half the trials, the search's best so far against the median best of that many trials taken at random.
Both compare at a budget fixed in advance, never at the trial that happened to be best.

Random orders of the search's own trials are a generous baseline: where a sampler steered its later trials
towards a good region, those trials are in the pool random sampling draws from. So "the search beat random" here
is a conservative verdict; "it did not" means its order bought nothing over these configs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harness.objective import Objective
from harness.report.fmt import fmt

MIN_TRIALS = 4  # fewer finished trials cannot tell an order from luck
RESAMPLES = 2000
ENDED = ("finished", "stopped", "diverged")  # trials whose value the search had when it ended


@dataclasses.dataclass(frozen=True)
class SearchVsRandom:
    trials: int  # ended search trials
    trial_epochs: int  # what they trained together
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
    def beyond_chance(self) -> bool:
        return self.share_random_as_soon <= 0.05

    def sentence(self, objective: Objective) -> str:
        lo, hi = self.random_best_at_half_iqr
        return (f"Against random sampling over its own {self.trials} trials: the search reached its best "
                f"({objective.key} {fmt(self.best)}) after {self.best_after_epochs} trial-epochs, at its trial "
                f"{self.best_after_trials}; random orders of the same trials need a median "
                f"{fmt(self.random_epochs_to_best)}, and {self.share_random_as_soon * 100:.0f} % of {RESAMPLES} get "
                f"there as soon ({'beyond chance' if self.beyond_chance else 'within chance; 5 % or fewer would be beyond it'}). "
                f"After {self.half} trials it had {fmt(self.search_best_at_half)}; {self.half} of these trials at "
                f"random reach a median {fmt(self.random_best_at_half)} (IQR {fmt(lo)} to {fmt(hi)}).")


def too_few_sentence(trials: int) -> str:
    return (f"{trials} search trial{'s' if trials != 1 else ''} ended: too few to compare the search with random "
            f"sampling ({MIN_TRIALS} needed).")


def vs_random_note(vs: SearchVsRandom | None, ranked: list[dict], objective: Objective) -> str:
    """A search table's sentence on its search against random sampling; empty for a table with no trials."""
    if vs is not None:
        return vs.sentence(objective)
    if not ranked:
        return ""
    ended = len(ended_trials(ranked, objective))
    if ended >= MIN_TRIALS:  # enough trials, but their rows carry no launch times
        return "The search trials' launch times are not recorded (an older harness): no comparison with random sampling."
    return too_few_sentence(ended)


def ended_trials(ranked: list[dict], objective: Objective) -> list[dict]:
    """The search trials whose value the search had when it ended."""
    return [e for e in ranked if e["final_status"] in ENDED and objective.value_of(e) is not None]


def search_vs_random(ranked: list[dict], stage_rows: list[dict], objective: Objective,
                     seed: int = 0) -> SearchVsRandom | None:
    """``ranked``: one stage's search trials as the report ranks them (build.rank_trials: each trial's best
    evaluation, its ``final_status`` and last evaluation ``trial_cost``); ``stage_rows``: those trials' results
    rows, which give each trial's launch time. None with fewer than MIN_TRIALS ended trials."""
    started: dict[str, float] = {}
    for r in stage_rows:
        t = r.get("started_at")
        if isinstance(t, (int, float)):  # a resumed run restarts its clock: the trial's first start is the earliest
            started[r["trial_id"]] = min(started.get(r["trial_id"], t), t)
    ended = [e for e in ended_trials(ranked, objective) if e["trial_id"] in started]
    if len(ended) < MIN_TRIALS:
        return None
    ended.sort(key=lambda e: (started[e["trial_id"]], e["trial_id"]))
    # Larger is better below: sort_key is ascending-best, so its negation orders every objective the same way.
    score = np.array([-objective.sort_key(objective.value_of(e)) for e in ended])
    cost = np.array([int(e["trial_cost"]["epoch"]) for e in ended])
    k = int(np.argmax(score)) + 1  # argmax takes the first of ties
    z = int(cost[:k].sum())
    rng = np.random.default_rng(seed)
    orders = np.array([rng.permutation(len(ended)) for _ in range(RESAMPLES)])
    first_best = np.argmax(score[orders] >= score[k - 1], axis=1)  # each order's first position that reaches it
    epochs_to_best = np.cumsum(cost[orders], axis=1)[np.arange(RESAMPLES), first_best]
    half = len(ended) // 2
    best_of_half = score[orders[:, :half]].max(axis=1)
    q25, q50, q75 = np.percentile(best_of_half, [25, 50, 75])
    value = (lambda s: -float(s)) if objective.lower_is_better else float
    low, high = sorted((value(q25), value(q75)))
    return SearchVsRandom(trials=len(ended), trial_epochs=int(cost.sum()), best=value(score[k - 1]),
                          best_after_trials=k, best_after_epochs=z,
                          random_epochs_to_best=float(np.median(epochs_to_best)),
                          share_random_as_soon=float(np.mean(epochs_to_best <= z)), half=half,
                          search_best_at_half=value(score[:half].max()), random_best_at_half=value(q50),
                          random_best_at_half_iqr=(low, high))
