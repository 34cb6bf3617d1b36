"""Replayed searches over a recorded grid: hundreds of repetitions of each search method, in seconds.

    python benchmarks/search_efficiency.py --replay GRID [--reps 200] [--budget 36]
        [--objective live/base:fid:1 --objective ema0.999/base:fid:3 ...] [--methods random,tpe,...]

GRID is the grid.jsonl that benchmarks/objective_noise.py records: configs x training seeds, every epoch
evaluated. A replayed trial's value at epoch e is the recorded value of its config and one seed at e, as the
objective (a generator and draw, a metric, a window) scores it. The searcher is the harness's own
(harness.searcher.make_searcher: BudgetAwareOptunaSearch with the method's Optuna sampler, the sweep's start
points first) and the scheduler is Ray Tune's (harness.searcher.make_scheduler), driven trial by trial the
way Tune drives them, one trial at a time.

Proposals are snapped: a sampler proposes a point of the sweep's Stage-I space, and the trial trains the
recorded config nearest to it (in the unit cube of the space, log scale for log-uniform parameters). The
sampler is told the value at its own proposal. With few recorded configs this caps what a model-based
sampler can gain: it can only choose among them.

Each repetition draws, per config, one seed the search sees; a pick's confirmed value is its config's mean
over the other seeds at the full budget. The answers: the median confirmed value of the incumbent against
trial-epochs (with its interquartile band); the trial-epochs each method needs to reach random search's
final median; the confirmed picks and a one-sided Mann-Whitney U test of each method against random; and
each pick's rank among the grid's configs (by the mean over every seed), its caption fidelity, and the live
generator's conditioning over the unseen seeds, which compares across objectives.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import optuna
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher
from scipy import stats

from harness.objective import Objective
from harness.optuna_space import optuna_space
from harness.phase import Phase
from harness.searcher import make_scheduler, make_searcher

REPLAY_METHODS = {  # name -> (sampler, scheduler)
    "random": ("random", "none"), "tpe": ("tpe", "none"), "gp": ("gp", "none"),
    "random+asha": ("random", "asha"), "tpe+asha": ("tpe", "asha"), "random+median": ("random", "median"),
}
BASELINE = "random"


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
    """Which recorded number is the objective: a generator and draw (grid key), a metric and a window."""

    key: str  # e.g. live/base, ema0.999/base
    metric: str
    window: int

    @classmethod
    def parse(cls, text: str) -> ObjectiveSpec:
        key, metric, window = text.split(":")
        return cls(key, metric, int(window))

    @property
    def objective(self) -> Objective:
        return Objective(self.metric, self.window)

    def __str__(self) -> str:
        return f"{self.key}:{self.metric}:{self.window}"


class Grid:
    """The recorded runs as arrays: values[config][seed] is the objective after each epoch."""

    def __init__(self, runs: list[dict], spec: ObjectiveSpec, space: dict) -> None:
        finished = [r for r in runs if r["status"] == "finished"]
        self.epochs = min(len(r["curve"]) for r in finished)
        self.params = {r["config"]: r["params"] for r in finished}
        self.configs = sorted(self.params)
        self.values: dict[int, dict[int, np.ndarray]] = {}
        self.fidelity: dict[int, dict[int, float]] = {}
        # One yardstick for every objective: the live generator's conditioning at the last epoch (all-attributes
        # fidelity in grids recorded before conditioning was kept), so picks compare across objectives.
        ends = [r["curve"][self.epochs - 1]["evals"] for r in finished]
        self.yardstick = "conditioning" if all("conditioning" in e.get("live/base", {}) for e in ends) else "fidelity"
        self.yardstick_values: dict[int, dict[int, float]] = {}
        for r in finished:
            raw = [float(e["evals"][spec.key][spec.metric]) for e in r["curve"][:self.epochs]]
            self.values.setdefault(r["config"], {})[r["seed"]] = np.array(spec.objective.after_each(raw))
            end = r["curve"][self.epochs - 1]["evals"]
            self.fidelity.setdefault(r["config"], {})[r["seed"]] = end[spec.key]["fidelity"]
            self.yardstick_values.setdefault(r["config"], {})[r["seed"]] = end.get("live/base", end[spec.key])[self.yardstick]
        self.configs = [c for c in self.configs if len(self.values.get(c, {})) >= 2]
        self.objective = spec.objective
        self.space = space
        self._unit = np.array([self._to_unit(self.params[c]) for c in self.configs])
        truth = {c: float(np.mean([v[-1] for v in self.values[c].values()])) for c in self.configs}
        order = self.objective.ranked(self.configs, truth.get)
        self.true_rank = {c: i + 1 for i, c in enumerate(order)}  # 1 = the grid's best config by all seeds

    def _to_unit(self, params: dict) -> list[float]:
        out = []
        for name, dist in self.space.items():
            v = params[name]
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                out.append(float(dist.choices.index(v)) / max(1, len(dist.choices) - 1))
            elif getattr(dist, "log", False):
                out.append((math.log(v) - math.log(dist.low)) / (math.log(dist.high) - math.log(dist.low)))
            else:
                out.append((v - dist.low) / (dist.high - dist.low))
        return out

    def nearest(self, params: dict) -> int:
        d = np.abs(self._unit - np.array(self._to_unit(params))).sum(axis=1)
        return self.configs[int(np.argmin(d))]


class _Trial:
    """What Ray's schedulers read of a trial: its id (and it must hash)."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


class _Controller:
    """What MedianStoppingRule asks the controller: the live trials (none wait: one trial at a time)."""

    def get_live_trials(self) -> list:
        return []


def seen_seeds(grid: Grid, rep: int, seen_seed: int | None = None) -> dict[int, int]:
    """The one training seed of each config that repetition ``rep`` sees: drawn at random, or ``seen_seed`` for
    every config, as in a live search phase, whose trials all train with the sweep's train.seed."""
    if seen_seed is not None:
        return {c: seen_seed for c in grid.configs}
    rng = np.random.default_rng(rep)
    return {c: int(rng.choice(sorted(grid.values[c]))) for c in grid.configs}


class SnapToGrid(Searcher):
    """A Tune searcher whose trials train only the grid's recorded configs: the live counterpart of the replay's
    snapping (benchmarks/search_efficiency.py --over). ``inner`` (the harness's searcher) proposes, the trial
    trains the nearest recorded config, and ``inner`` is told the trial's results under its own proposal."""

    def __init__(self, inner: Searcher, grid: Grid) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner, self.grid = inner, grid
        self.config_of: dict[str, int] = {}  # trial id -> the recorded config it trains

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.inner.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str):
        proposal = self.inner.suggest(trial_id)
        if not isinstance(proposal, dict):  # None (wait) or Searcher.FINISHED
            return proposal
        self.config_of[trial_id] = self.grid.nearest(proposal)
        return dict(self.grid.params[self.config_of[trial_id]])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.inner.on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)


def replay(grid: Grid, sweep, sampler: str, scheduler: str, rep: int, budget: int, grace: int, reduction: int,
           startup: int, start_points: bool = True, seen_seed: int | None = None) -> dict:
    """One search of ``budget`` trial-epochs; its anytime curve and its pick. ``start_points``: the sweep's
    (the paper defaults, then its known-good points) come first, as in a live sweep; without them every method
    starts from its sampler alone. ``seen_seed``: see seen_seeds."""
    objective = grid.objective
    seen = seen_seeds(grid, rep, seen_seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    first = sweep.start_points(Phase.STAGE1) if start_points else []
    searcher = make_searcher(grid.space, first, objective, seed=rep, final_stage=1,
                             sampler=sampler, startup_trials=startup)
    sched = make_scheduler(scheduler, grid.epochs, grace, reduction)
    if sched is not None:
        sched.set_search_properties(objective.key, objective.mode)
    controller, spent, n, points, incumbent = _Controller(), 0, 0, [], None
    while spent < budget:
        trial_id = f"r{rep}t{n}"
        n += 1
        config = grid.nearest(searcher.suggest(trial_id))
        curve = grid.values[config][seen[config]]
        trial = _Trial(trial_id)
        if sched is not None:
            sched.on_trial_add(controller, trial)
        for epoch in range(1, grid.epochs + 1):
            spent += 1
            last = epoch == grid.epochs
            result = {"training_iteration": epoch, objective.key: float(curve[epoch - 1]), "stage": 1,
                      "status": "finished" if last else "running"}
            if last:
                searcher.on_trial_complete(trial_id, result)
                if sched is not None:
                    sched.on_trial_complete(controller, trial, result)
                if incumbent is None or objective.better(result[objective.key], incumbent[1]):
                    incumbent = (config, result[objective.key])
                break
            searcher.on_trial_result(trial_id, result)
            action = sched.on_trial_result(controller, trial, result) if sched is not None else TrialScheduler.CONTINUE
            if action == TrialScheduler.STOP or spent >= budget:  # stopped early: Optuna hears it was pruned
                searcher.on_trial_complete(trial_id, {**result, "status": "stopped"})
                if sched is not None and action != TrialScheduler.STOP:
                    sched.on_trial_remove(controller, trial)
                break
        confirmed = None if incumbent is None else confirmed_value(grid, incumbent[0], seen)
        points.append((spent, confirmed))
    pick = None if incumbent is None else incumbent[0]
    return {"points": points, "pick": pick, "trials": n,
            "confirmed": None if pick is None else confirmed_value(grid, pick, seen),
            "pick_rank": None if pick is None else grid.true_rank[pick],
            "pick_fidelity": None if pick is None else float(np.mean(
                [f for s, f in grid.fidelity[pick].items() if s != seen[pick]])),
            "pick_yardstick": None if pick is None else float(np.mean(
                [f for s, f in grid.yardstick_values[pick].items() if s != seen[pick]]))}


def confirmed_value(grid: Grid, config: int, seen: dict[int, int]) -> float:
    """The config's mean over the seeds the search did not see, at the full budget."""
    return float(np.mean([v[-1] for s, v in grid.values[config].items() if s != seen[config]]))


def on_budget_grid(points: list[tuple[int, float | None]], budget: int) -> np.ndarray:
    """The confirmed incumbent after each trial-epoch 1..budget (NaN before the first full-budget trial ended)."""
    out = np.full(budget, np.nan)
    for spent, value in points:
        if value is not None:
            out[spent - 1:] = value
    return out


def run(runs: list[dict], sweep, specs: list[ObjectiveSpec], methods: list[str], reps: int, budget: int,
        grace: int, reduction: int, startup: int, start_points: bool = True, seen_seed: int | None = None) -> dict:
    space = optuna_space(sweep.stage1.search)
    out: dict = {"reps": reps, "budget_trial_epochs": budget, "grace_period": grace, "reduction_factor": reduction,
                 "startup_trials": startup, "start_points": start_points,
                 "seen_seed": "drawn per config" if seen_seed is None else seen_seed,
                 "proposals": "snapped to the nearest recorded config", "objectives": {}}
    for spec in specs:
        grid = Grid(runs, spec, space)
        objective = grid.objective
        result: dict = {"configs": len(grid.configs), "epochs": grid.epochs, "yardstick": f"live/base {grid.yardstick}",
                        "methods": {}}
        curves, picks = {}, {}
        for method in methods:
            sampler, scheduler = REPLAY_METHODS[method]
            reps_out = [replay(grid, sweep, sampler, scheduler, rep, budget, grace, reduction, startup, start_points,
                               seen_seed) for rep in range(reps)]
            curves[method] = np.array([on_budget_grid(r["points"], budget) for r in reps_out])
            picks[method] = [r["confirmed"] for r in reps_out if r["confirmed"] is not None]
            result["methods"][method] = {
                "median_confirmed": _stat(np.median, picks[method]),
                "iqr_confirmed": [_stat(lambda v: np.percentile(v, 25), picks[method]),
                                  _stat(lambda v: np.percentile(v, 75), picks[method])],
                "median_pick_rank": _stat(np.median, [r["pick_rank"] for r in reps_out if r["pick_rank"]]),
                "share_picking_the_best_config": round(float(np.mean([r["pick_rank"] == 1 for r in reps_out])), 3),
                "median_pick_fidelity": _stat(np.median, [r["pick_fidelity"] for r in reps_out
                                                          if r["pick_fidelity"] is not None]),
                "median_pick_yardstick": _stat(np.median, [r["pick_yardstick"] for r in reps_out
                                                           if r["pick_yardstick"] is not None]),
                "median_trials": float(np.median([r["trials"] for r in reps_out])),
            }
        target = np.nanmedian(curves[BASELINE][:, -1]) if BASELINE in curves else None
        for method in methods:
            median = np.nanmedian(curves[method], axis=0)
            m = result["methods"][method]
            reached = [i + 1 for i, v in enumerate(median) if np.isfinite(v) and target is not None
                       and objective.sort_key(v) <= objective.sort_key(target)]
            m["trial_epochs_to_random_final_median"] = reached[0] if reached else None
            m["curve_median"] = [None if not np.isfinite(v) else round(float(v), 5) for v in median]
            m["curve_q25"] = [None if not np.isfinite(v) else round(float(v), 5)
                              for v in np.nanpercentile(curves[method], 25, axis=0)]
            m["curve_q75"] = [None if not np.isfinite(v) else round(float(v), 5)
                              for v in np.nanpercentile(curves[method], 75, axis=0)]
            if method != BASELINE and BASELINE in picks and picks[method]:
                alternative = "less" if objective.lower_is_better else "greater"
                m["p_vs_random"] = round(float(stats.mannwhitneyu(picks[method], picks[BASELINE],
                                                                  alternative=alternative).pvalue), 4)
        result["random_final_median"] = None if target is None else round(float(target), 5)
        out["objectives"][str(spec)] = result
    return out


def _stat(fn, values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(fn(values)), 5) if values else None


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = list(result["objectives"])
    fig, axes = plt.subplots(1, len(objectives), figsize=(6 * len(objectives), 4.2), squeeze=False)
    for ax, name in zip(axes[0], objectives):
        res = result["objectives"][name]
        for method, m in res["methods"].items():
            x = np.arange(1, len(m["curve_median"]) + 1)
            med = np.array([np.nan if v is None else v for v in m["curve_median"]], float)
            lo = np.array([np.nan if v is None else v for v in m["curve_q25"]], float)
            hi = np.array([np.nan if v is None else v for v in m["curve_q75"]], float)
            line, = ax.plot(x, med, label=method)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.12)
        ax.set(title=f"{name}: confirmed value of the incumbent", xlabel="trial-epochs",
               ylabel="config mean over unseen seeds (median, IQR)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
