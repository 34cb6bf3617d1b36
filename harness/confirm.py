"""Confirmation runs and rankings that survive seed noise.

A search run is one training seed at whatever budget the scheduler allowed it, so its score mixes
the config's quality with the seed's luck, and picking the best of N such runs selects for luck
(the winner's curse, docs/RANKING.md). After a phase's search, the top-k configs and the paper
defaults are trained again, at the phase's full budget, with the same fresh training seeds
(``search.confirm``); this module chooses those candidates and ranks the confirmed configs:

- a seed run's score is its last evaluation (the full budget), a diverged run scores the worst value;
- a config's score is the mean over its seed runs, with the sample standard deviation and a 95 %
  Student-t interval (n - 1 degrees of freedom) on the metric's scale: log for a positive metric,
  logit for a share (SeedSummary says why);
- "beats the paper defaults beyond noise" is a one-sided Welch's unequal-variance t-test at
  ``ALPHA``: it suits 2-5 seeds, where a bootstrap over so few values is degenerate.

Tune runs the confirmation trials (harness/sweep.py confirm_phase); this module is plain Python.
"""

from __future__ import annotations

import dataclasses
import math

from scipy import stats

from harness.objective import Objective
from harness.phase import Phase, Source
from harness.results import config_id, last_by_trial, params_of

ALPHA = 0.05
TEST_NAME = "one-sided Welch's t-test"
INTERVAL_METHODS = {"linear": "Student-t interval of the mean",
                    "log": "Student-t interval on the log scale (the metric is positive), back-transformed",
                    "logit": "Student-t interval on the logit scale (the metric is a share in [0, 1]), back-transformed"}
_EDGE = 1e-6  # logit: a share of exactly 0 or 1 is moved this far inside


def confirmation_seeds(search_seed: int, n: int) -> list[int]:
    """``n`` training seeds no search run used (search runs all train with ``search_seed``)."""
    return [search_seed + 1 + i for i in range(n)]


@dataclasses.dataclass(frozen=True)
class SeedSummary:
    """Mean and sample sd over n seed runs, and a 95 % Student-t interval (n - 1 degrees of freedom) computed
    on the metric's own scale (Objective.interval_scale): on the log scale a positive metric's interval stays
    positive, on the logit scale a share's stays inside [0, 1]. With 2 seeds t is 12.7, so a plain interval
    of a positive metric would reach below zero."""

    n: int
    mean: float
    sd: float
    low: float
    high: float
    scale: str = "linear"

    @classmethod
    def of(cls, values: list[float], scale: str = "linear") -> SeedSummary:
        if scale not in INTERVAL_METHODS:
            raise ValueError(f"scale must be one of {', '.join(INTERVAL_METHODS)}, got {scale!r}")
        n = len(values)
        mean = sum(values) / n
        if n < 2:
            return cls(n, mean, float("nan"), mean, mean, scale)
        sd = _sd(values)
        forward, back = _TRANSFORMS[scale]
        if scale == "log" and min(values) <= 0:  # no log of a value at or below zero: the plain interval
            forward, back, scale = _TRANSFORMS["linear"] + ("linear",)
        t = [forward(v) for v in values]
        centre = sum(t) / n
        half = stats.t.ppf(0.975, n - 1) * _sd(t) / math.sqrt(n)
        return cls(n, mean, sd, back(centre - half), back(centre + half), scale)

    @property
    def method(self) -> str:
        return INTERVAL_METHODS[self.scale]


def _sd(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _logit(p: float) -> float:
    p = min(max(p, _EDGE), 1 - _EDGE)
    return math.log(p / (1 - p))


_TRANSFORMS = {"linear": (float, float), "log": (math.log, math.exp),
               "logit": (_logit, lambda x: 1 / (1 + math.exp(-x)))}


@dataclasses.dataclass(frozen=True)
class Verdict:
    outcome: str  # better | worse | within_noise | reference | untested
    p_value: float | None  # the one-sided p of the direction the means point to
    sentence: str


def compare_to_defaults(values: list[float], default_values: list[float], objective: Objective) -> Verdict:
    """Does a config beat the paper defaults beyond seed noise? One-sided Welch's t-test each way."""
    mine, ref = SeedSummary.of(values), SeedSummary.of(default_values)
    if mine.n < 2 or ref.n < 2:
        return Verdict("untested", None, f"Not tested against the paper defaults: needs 2 or more seeds on both sides "
                                         f"(has {mine.n} and {ref.n}).")
    if mine.sd == 0 and ref.sd == 0:
        return Verdict("untested", None, "Not tested: neither this config nor the paper defaults varied across seeds.")
    better_alt = "less" if objective.lower_is_better else "greater"
    worse_alt = "greater" if objective.lower_is_better else "less"
    p_better = float(stats.ttest_ind(values, default_values, equal_var=False, alternative=better_alt).pvalue)
    p_worse = float(stats.ttest_ind(values, default_values, equal_var=False, alternative=worse_alt).pvalue)
    diff = mine.mean - ref.mean
    rel = f" ({diff / ref.mean:+.0%})" if ref.mean else ""
    means = f"mean {objective.key} {mine.mean:.4g} against the defaults' {ref.mean:.4g}{rel}"
    if p_better < ALPHA:
        return Verdict("better", p_better, f"Beats the paper defaults beyond seed noise: {means}, "
                                           f"{TEST_NAME} p = {p_better:.3f} < {ALPHA}.")
    if p_worse < ALPHA:
        return Verdict("worse", p_worse, f"Worse than the paper defaults beyond seed noise: {means}, "
                                         f"{TEST_NAME} p = {p_worse:.3f} < {ALPHA}.")
    return Verdict("within_noise", min(p_better, p_worse),
                   f"Not distinguishable from the paper defaults: {means} is within seed noise "
                   f"({TEST_NAME} p = {min(p_better, p_worse):.3f} >= {ALPHA}).")


@dataclasses.dataclass(frozen=True)
class ConfirmedConfig:
    config_id: str
    params: dict
    is_default: bool
    trial_ids: tuple[str, ...]  # one confirmation run per seed, in seed order
    seeds: tuple[int, ...]
    values: tuple[float, ...]  # each run's last evaluation of the objective
    diverged: int  # runs that diverged (they score the worst value)
    best_trial: str  # the seed run with the best value: whose checkpoint a later stage refines
    summary: SeedSummary
    verdict: Verdict


def _final_score(last: dict, final_stage: int, objective: Objective) -> tuple[float, bool] | None:
    """A confirmation run's (score, diverged) from its last evaluation, or None while it has not ended."""
    value = objective.value_of(last)
    if last["status"] == "diverged":
        return (objective.worst if value is None else value), True
    if last["stage"] == final_stage and last["status"] == "finished" and value is not None:
        return value, False
    return None


def rank_confirmed(rows: list[dict], phase: Phase, objective: Objective, default_id: str) -> list[ConfirmedConfig]:
    """The confirmed configs of ``phase``, best mean first (configs with a diverged seed last)."""
    confirm_rows = [r for r in rows if r["phase"] == phase and r["source"] == Source.CONFIRM]
    runs: dict[str, list[tuple[int, str, float, bool]]] = {}
    params: dict[str, dict] = {}
    for tid, last in last_by_trial(confirm_rows).items():
        scored = _final_score(last, phase.final_stage, objective)
        if scored is None:
            continue
        cid = last["config_id"]
        runs.setdefault(cid, []).append((int(last["train_seed"]), tid, *scored))
        params[cid] = params_of(last)
    default_values = [v for _, _, v, _ in sorted(runs.get(default_id, []))]
    out = []
    for cid, seed_runs in runs.items():
        seed_runs.sort()
        values = [v for _, _, v, _ in seed_runs]
        best = objective.best(seed_runs, lambda run: run[2])
        is_default = cid == default_id
        verdict = (Verdict("reference", None, "The paper defaults: the reference the other configs are tested against.")
                   if is_default else compare_to_defaults(values, default_values, objective))
        out.append(ConfirmedConfig(cid, params[cid], is_default, tuple(t for _, t, _, _ in seed_runs),
                                   tuple(s for s, _, _, _ in seed_runs), tuple(values),
                                   sum(1 for *_, d in seed_runs if d), best[1],
                                   SeedSummary.of(values, objective.interval_scale), verdict))
    out.sort(key=lambda c: (c.diverged > 0, objective.sort_key(c.summary.mean)))
    return out


def confirmation_candidates(search_ranked: list[dict], defaults: dict, top_k: int) -> list[dict]:
    """The paper defaults, then the searched values of the best ``top_k`` other configs of a phase's
    search (ranked entries of report.rank_trials, diverged ones skipped, each config once)."""
    candidates, seen = [dict(defaults)], {config_id(defaults)}
    for entry in search_ranked:
        if len(candidates) > top_k or entry["final_status"] == "diverged":
            continue
        params = params_of(entry)
        if config_id(params) not in seen:
            seen.add(config_id(params))
            candidates.append(params)
    return candidates
