"""Confirmation runs and rankings that survive seed noise.

A search run is one training seed at whatever budget the scheduler allowed it, so its score mixes
the config's quality with the seed's luck, and picking the best of N such runs selects for luck
(the winner's curse, docs/RANKING.md). After a phase's search, the top-k configs and the paper
defaults are trained again, at the phase's full budget, with the same fresh training seeds
(``search.confirm``); this module chooses those candidates and ranks the confirmed configs:

- a seed run's score is its last evaluation (the full budget), a diverged run scores the worst value;
- a config's score is the mean over its seed runs, with a 95 % Student-t interval (n - 1 degrees of
  freedom) and the sample standard deviation;
- "beats the paper defaults beyond noise" is a one-sided Welch's unequal-variance t-test at
  ``ALPHA``: it suits 2-5 seeds, where a bootstrap over so few values is degenerate.

Tune runs the confirmation trials (harness/tune.py confirm_phase); this module is plain Python.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

ALPHA = 0.05
TEST_NAME = "one-sided Welch's t-test"


def _stats():
    """scipy.stats on first use: every trial process imports config_id from here, and scipy.stats takes ~1 s to load."""
    from scipy import stats

    return stats


PARAM_PREFIX = "param."  # a results row's columns of the config's searched values


def params_of(row: dict) -> dict:
    """The searched values of a results row (its ``param.*`` columns), by name."""
    return {k.removeprefix(PARAM_PREFIX): v for k, v in row.items() if k.startswith(PARAM_PREFIX)}


def config_id(params: dict) -> str:
    """A stable short id of a config (its searched values), shared by its search and confirmation runs.
    Numbers compare as floats: a YAML default of 2 and a sampled 2.0 are the same config."""
    canonical = {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for k, v in params.items()}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()[:10]


def confirmation_seeds(search_seed: int, n: int) -> list[int]:
    """``n`` training seeds no search run used (search runs all train with ``search_seed``)."""
    return [search_seed + 1 + i for i in range(n)]


@dataclasses.dataclass(frozen=True)
class SeedSummary:
    """Mean, sample sd and the 95 % Student-t interval of the mean over n seed runs."""

    n: int
    mean: float
    sd: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> SeedSummary:
        n = len(values)
        mean = sum(values) / n
        if n < 2:
            return cls(n, mean, float("nan"), mean, mean)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = _stats().t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        return cls(n, mean, sd, mean - half, mean + half)

    def overlaps(self, other: SeedSummary) -> bool:
        return self.low <= other.high and other.low <= self.high


@dataclasses.dataclass(frozen=True)
class Verdict:
    outcome: str  # better | worse | within_noise | reference | untested
    p_value: float | None  # the one-sided p of the direction the means point to
    sentence: str


def compare_to_defaults(values: list[float], default_values: list[float], mode: str, metric: str) -> Verdict:
    """Does a config beat the paper defaults beyond seed noise? One-sided Welch's t-test each way."""
    mine, ref = SeedSummary.of(values), SeedSummary.of(default_values)
    if mine.n < 2 or ref.n < 2:
        return Verdict("untested", None, f"Not tested against the paper defaults: needs 2 or more seeds on both sides "
                                         f"(has {mine.n} and {ref.n}).")
    if mine.sd == 0 and ref.sd == 0:
        return Verdict("untested", None, "Not tested: neither this config nor the paper defaults varied across seeds.")
    lower_is_better = mode == "min"
    better_alt = "less" if lower_is_better else "greater"
    worse_alt = "greater" if lower_is_better else "less"
    stats = _stats()
    p_better = float(stats.ttest_ind(values, default_values, equal_var=False, alternative=better_alt).pvalue)
    p_worse = float(stats.ttest_ind(values, default_values, equal_var=False, alternative=worse_alt).pvalue)
    diff = mine.mean - ref.mean
    rel = f" ({diff / ref.mean:+.0%})" if ref.mean else ""
    means = f"mean {metric} {mine.mean:.4g} against the defaults' {ref.mean:.4g}{rel}"
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

    def to_row(self, metric: str) -> dict:
        """A flat dict for tables and Parquet."""
        s = self.summary
        return {"config_id": self.config_id, "is_default": self.is_default, "seeds": list(self.seeds),
                "trial_ids": list(self.trial_ids), "values": list(self.values), "n_seeds": s.n, "diverged": self.diverged,
                f"{metric}_mean": s.mean, f"{metric}_sd": s.sd, "ci_low": s.low, "ci_high": s.high,
                "verdict": self.verdict.outcome, "p_value": self.verdict.p_value, "sentence": self.verdict.sentence,
                "best_trial": self.best_trial, **{PARAM_PREFIX + k: v for k, v in self.params.items()}}


def _final_score(trial_rows: list[dict], final_stage: int, metric: str) -> tuple[float, bool] | None:
    """A confirmation run's (score, diverged), or None while it has not ended."""
    last = max(trial_rows, key=lambda r: (r["stage"], r["epoch"]))
    if last["status"] == "diverged":
        return float(last[metric]), True
    if last["stage"] == final_stage and last["status"] == "finished" and last.get(metric) is not None:
        return float(last[metric]), False
    return None


def rank_confirmed(rows: list[dict], phase: str, metric: str, mode: str, default_id: str) -> list[ConfirmedConfig]:
    """The confirmed configs of ``phase``, best mean first (configs with a diverged seed last)."""
    final_stage = 1 if phase == "stage1" else 2
    by_trial: dict[str, list[dict]] = {}
    for r in rows:
        if r["phase"] == phase and r.get("source") == "confirm":
            by_trial.setdefault(r["trial_id"], []).append(r)
    runs: dict[str, list[tuple[int, str, float, bool]]] = {}
    params: dict[str, dict] = {}
    for tid, trial_rows in by_trial.items():
        scored = _final_score(trial_rows, final_stage, metric)
        if scored is None:
            continue
        cid = trial_rows[0]["config_id"]
        runs.setdefault(cid, []).append((int(trial_rows[0]["train_seed"]), tid, *scored))
        params[cid] = params_of(trial_rows[0])
    default_values = [v for _, _, v, _ in sorted(runs.get(default_id, []))]
    sign = 1 if mode == "min" else -1
    out = []
    for cid, seed_runs in runs.items():
        seed_runs.sort()
        values = [v for _, _, v, _ in seed_runs]
        best = min(seed_runs, key=lambda run: sign * run[2])
        is_default = cid == default_id
        verdict = (Verdict("reference", None, "The paper defaults: the reference the other configs are tested against.")
                   if is_default else compare_to_defaults(values, default_values, mode, metric))
        out.append(ConfirmedConfig(cid, params[cid], is_default, tuple(t for _, t, _, _ in seed_runs),
                                   tuple(s for s, _, _, _ in seed_runs), tuple(values),
                                   sum(1 for *_, d in seed_runs if d), best[1], SeedSummary.of(values), verdict))
    out.sort(key=lambda c: (c.diverged > 0, sign * c.summary.mean))
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
