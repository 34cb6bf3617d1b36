"""Does the replay (benchmarks/search_replay.py) predict live searches? Live searches over a recorded grid's configs.

    python benchmarks/search_efficiency.py --over GRID --epochs E --n N [--methods random,tpe+asha] [--reps 3]
        [--budget 48] [--no-start-points] [--concurrent 2] [--out DIR]

Each repetition is the live benchmark's (benchmarks/search_efficiency.py: a real Stage-I search phase of the harness,
Tune with its Optuna searcher seeded with the repetition's index and its scheduler, --concurrent trials at once,
stopped at --budget trial-epochs), except that every trial trains the grid's recorded config nearest to what the
sampler proposed (search_replay.SnapToGrid), and no pick is trained again: the curve's value after each trial is
the incumbent's confirmed value from the grid, its mean over the seeds the search did not see, as in the replay.
A live search phase trains every trial with the sweep's train.seed, so the replay it is checked against sees that
seed of every config (search_replay.seen_seeds).

What can differ from the replay, which is the point of the check: the live search runs --concurrent trials at once,
so the sampler proposes before the running trials have reported, ASHA decides on the trials that reached a rung
first, and the budget cuts off the trials still running; and the live training may not reproduce the recorded
values (another CPU type, another thread count).

Answers, in replay_check.json under --out: per method, each live repetition's curve and the same-seed replay's,
the replay's median and interquartile band over --replay-reps repetitions, the share of trial-epochs at which
the replayed median lies within the live repetitions' spread (their min and max), the picks of both; and how far
each live trial's objective after each epoch is from the recorded one. replay_check.png draws them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time

import numpy as np
import pyarrow.fs as pafs

from harness import storage
from harness.config import load_sweep
from harness.optuna_space import optuna_space
from harness.run_layout import SweepLayout

LIVE_KEY = "live/base"  # the grid's record of the live generator on the harness's own evaluation draw


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def live_points(rep: dict, layout: SweepLayout, grid, seen: dict[int, int]) -> list[tuple[int, float | None]]:
    """A live repetition's curve in the replay's terms: (trial-epochs spent, the incumbent's confirmed value)."""
    from search_replay import confirmed_value

    points = []
    for p in rep["points"]:
        config = None
        if p["incumbent_trial"] is not None:
            with open(layout.trial(p["incumbent_trial"]).params) as f:
                config = grid.nearest(json.load(f)["params"])
        points.append((p["trial_epochs"], None if config is None else confirmed_value(grid, config, seen)))
    return points


def reproduction(layout: SweepLayout, grid, seen: dict[int, int], objective) -> list[float]:
    """Each live trial's largest |live - recorded| objective over the epochs it trained."""
    gaps = []
    for trial in storage.list_names(layout.trials_dir, pafs.FileType.Directory):
        with open(layout.trial(trial).params) as f:
            config = grid.nearest(json.load(f)["params"])
        recorded = grid.values[config][seen[config]]
        gap = 0.0
        for path in storage.list_files(layout.trial(trial).stage(1).metrics_dir, ".json"):
            with open(path) as f:
                m = json.load(f)
            value = objective.value_of(m)
            if value is not None:
                gap = max(gap, abs(value - float(recorded[int(m["epoch"]) - 1])))
        gaps.append(gap)
    return gaps


def _spread_share(replayed: np.ndarray, live: np.ndarray) -> float | None:
    """The share of trial-epochs (where every live repetition has an incumbent) at which the replayed median lies
    within the live repetitions' min and max."""
    defined = np.all(np.isfinite(live), axis=0) & np.isfinite(replayed)
    if not defined.any():
        return None
    low, high = live.min(axis=0), live.max(axis=0)
    inside = (replayed >= low - 1e-5) & (replayed <= high + 1e-5)  # the replay's figures are rounded to 5 decimals
    return round(float(inside[defined].mean()), 3)


def _same_share(live: np.ndarray, replayed: np.ndarray) -> float | None:
    """The share of trial-epochs (where both have an incumbent) at which a live curve equals its same-seed replay."""
    defined = np.isfinite(live) & np.isfinite(replayed)
    return round(float((np.abs(live - replayed)[defined] < 1e-5).mean()), 3) if defined.any() else None


def _rounded(values) -> list:
    return [None if not np.isfinite(v) else round(float(v), 5) for v in values]


def main_over(args, bench_sweep, run_repetition) -> int:
    """``bench_sweep`` and ``run_repetition``: the live benchmark's (search_efficiency.py, which calls this)."""
    from search_replay import REPLAY_METHODS, Grid, ObjectiveSpec, SnapToGrid, on_budget_grid, replay, seen_seeds
    from search_replay import run as run_replay

    from harness.cli import start_ray
    from harness.data.ensure import ensure_dataset

    sweep = load_sweep(args.sweep)
    bad = [m for m in args.methods if m not in REPLAY_METHODS]
    if bad:
        raise SystemExit(f"--methods: {bad[0]!r} cannot be replayed, so it cannot be checked; "
                         f"known: {', '.join(REPLAY_METHODS)}")
    with open(args.over) as f:
        runs = [json.loads(line) for line in f]
    spec = ObjectiveSpec(LIVE_KEY, sweep.objective.metric, sweep.objective.window)
    grid = Grid(runs, spec, optuna_space(sweep.stage1.search))
    if args.epochs != grid.epochs:
        raise SystemExit(f"--epochs: the grid {args.over} recorded {grid.epochs} epochs per run, got {args.epochs}")
    seen_seed = sweep.train.seed
    if any(seen_seed not in grid.values[c] for c in grid.configs):
        raise SystemExit(f"--over: the grid {args.over} has no runs with the sweep's train.seed {seen_seed}")
    seen = seen_seeds(grid, 0, seen_seed)

    root = storage.normalize(args.out)
    t0 = time.perf_counter()
    probe = bench_sweep(args, "probe", "tpe", "none")
    dataset_uri = ensure_dataset(root, probe.data, probe.model.profile)
    start_ray()
    live: dict[str, list[dict]] = {m: [] for m in args.methods}
    for rep in range(args.reps):  # interleaved, as the live benchmark
        for method in args.methods:
            r = run_repetition(args, root, dataset_uri, method, rep, wrap_searcher=lambda s: SnapToGrid(s, grid))
            layout = SweepLayout(root, f"{method.replace('+', '-')}-r{rep}")
            r["confirmed_points"] = live_points(r, layout, grid, seen)
            r["reproduction_gaps"] = reproduction(layout, grid, seen, sweep.objective)
            live[method].append(r)
            print(json.dumps({"method": method, "rep": rep, "trials": r["trials"], "wall_s": r["wall_s"],
                              "final": r["confirmed_points"][-1][1] if r["confirmed_points"] else None}), flush=True)
    live_wall = time.perf_counter() - t0

    bench = bench_sweep(args, "replay", "tpe", "none")  # the searches' own sweep: its scheduler settings
    distribution = run_replay(runs, bench, [spec], args.methods, args.replay_reps, args.budget, args.grace_period,
                              args.reduction_factor, args.startup_trials, args.start_points, seen_seed)
    replayed = distribution["objectives"][str(spec)]
    out: dict = {"grid": args.over, "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
                 "settings": {k: v for k, v in vars(args).items() if k not in ("replay", "objective")},
                 "objective": str(spec), "seen_seed": seen_seed, "live_wall_s": round(live_wall, 1),
                 "replay_reps": args.replay_reps, "methods": {}}
    for method in args.methods:
        sampler, scheduler = REPLAY_METHODS[method]
        same_seed = [replay(grid, bench, sampler, scheduler, rep, args.budget, args.grace_period, args.reduction_factor,
                            args.startup_trials, args.start_points, seen_seed) for rep in range(args.reps)]
        live_curves = np.array([on_budget_grid(r["confirmed_points"], args.budget) for r in live[method]])
        rm = replayed["methods"][method]
        median = np.array([np.nan if v is None else v for v in rm["curve_median"]])
        gaps = [g for r in live[method] for g in r["reproduction_gaps"]]
        same_curves = np.array([on_budget_grid(r["points"], args.budget) for r in same_seed])
        out["methods"][method] = {
            "live_curves": [_rounded(c) for c in live_curves],
            "same_seed_replay_curves": [_rounded(c) for c in same_curves],
            "live_equals_same_seed_replay": [_same_share(a, b) for a, b in zip(live_curves, same_curves)],
            "live_trial_epochs_spent": [r["trial_epochs"] for r in live[method]],
            "replay_median": rm["curve_median"], "replay_q25": rm["curve_q25"], "replay_q75": rm["curve_q75"],
            "replay_median_within_live_spread": _spread_share(median, live_curves),
            "live_final": [r["confirmed_points"][-1][1] if r["confirmed_points"] else None for r in live[method]],
            "same_seed_replay_final": [r["confirmed"] for r in same_seed],
            "replay_median_final": rm["median_confirmed"], "replay_iqr_final": rm["iqr_confirmed"],
            "live_picks": [None if r["pick"] is None else grid.nearest(r["pick"]) for r in live[method]],
            "same_seed_replay_picks": [r["pick"] for r in same_seed],
            "live_trials": [r["trials"] for r in live[method]],
            "same_seed_replay_trials": [r["trials"] for r in same_seed],
            "live_wall_s": [r["wall_s"] for r in live[method]],
            "reproduction_max_gap": round(max(gaps), 6) if gaps else None,
            "trials_reproduced_exactly": f"{sum(g < 1e-5 for g in gaps)} of {len(gaps)}",
        }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "replay_check.json"), "w") as f:
        json.dump(out, f, indent=1)
    plot(out, os.path.join(args.out, "replay_check.png"))
    print(json.dumps({m: {k: v for k, v in r.items() if "curve" not in k and not k.startswith("replay_q")
                          and k != "replay_median"} for m, r in out["methods"].items()}, indent=1))
    return 0


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(result["methods"])
    fig, axes = plt.subplots(1, len(methods), figsize=(5.5 * len(methods), 4), squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods):
        r = result["methods"][method]
        x = np.arange(1, len(r["replay_median"]) + 1)
        f = lambda v: np.array([np.nan if e is None else e for e in v], dtype=float)  # noqa: E731
        ax.plot(x, f(r["replay_median"]), color="C0", label=f"replay: median of {result['replay_reps']}")
        ax.fill_between(x, f(r["replay_q25"]), f(r["replay_q75"]), color="C0", alpha=0.2, label="replay: IQR")
        for i, c in enumerate(r["live_curves"]):
            ax.plot(x, f(c), color="C3", lw=1, label="live repetitions" if i == 0 else None)
        for i, c in enumerate(r["same_seed_replay_curves"]):
            ax.plot(x, f(c), color="C3", lw=1, ls=":", label="their seeds, replayed" if i == 0 else None)
        share = r["replay_median_within_live_spread"]
        ax.set_title(f"{method}: replayed median within the live spread at "
                     f"{'-' if share is None else f'{share:.0%}'} of budgets", fontsize=9)
        ax.set_xlabel("cumulative trial-epochs")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"incumbent's confirmed {result['objective']}")
    fig.suptitle(f"live searches over the grid's configs against their replay ({result['machine']['cpu']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
