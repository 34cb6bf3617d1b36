"""Search efficiency: does the harness's search find better StackGAN configs than random search, per budget?

    python benchmarks/search_efficiency.py [--methods random,random+asha,tpe,tpe+asha] [--reps 5]
        [--budget 48] [--epochs 6] [--n 1000] [--startup-trials 4] [--confirm-seeds 2] [--concurrent 2]
        [--device cpu|cuda] [--sweep FILE] [--out DIR]
    python benchmarks/search_efficiency.py --replay GRID [--objective KEY:METRIC:WINDOW ...] [--reps 200]
        [--budget 36] [--methods ...] [--no-start-points]
    python benchmarks/search_efficiency.py --over GRID --epochs E --n N [--methods random,tpe+asha] [--reps 3]
        [--budget 48] [--no-start-points]

--replay replays searches over a grid that benchmarks/objective_noise.py recorded, instead of training
(benchmarks/search_replay.py says how). --over checks that replay against live searches: the live benchmark,
with every trial training the recorded config nearest to its proposal (benchmarks/replay_check.py says how).
The rest of this text is the live benchmark.

Setup: the demo sweep's Stage-I (shapes data, small profile, batch 16, its search space and the paper
defaults as the first trial) on --n scenes; a trial trains at most --epochs epochs, and one repetition
of a method spends --budget trial-epochs. Every repetition is a real search phase of the harness
(harness.sweep.run_phase: Tune + OptunaSearch with the method's sampler, seeded with the repetition's
index, and the method's scheduler), stopped by a Tune stopper once its budget is spent.

After every finished trial it records the incumbent (the best judge-FID among trials that ran the full
--epochs) against cumulative trial-epochs and wall time, read back from what the trials wrote; run it
again with the same --out and it resumes, skipping the repetitions that finished. Then every repetition's pick (its final
incumbent) and the paper defaults are trained again with --confirm-seeds fresh seeds at the full budget
(harness.sweep.confirm_phase), so methods are compared on real quality, not on lucky evaluations.

Answers, in the JSON it prints: each method's median final incumbent with its interquartile range; the
trial-epochs its median curve needs to reach random search's final median incumbent, and the ratio to
random search; each pick's confirmed mean, and a one-sided Welch's t-test of each method's confirmed
picks against random search's. Writes search_efficiency.json and search_efficiency.png (median anytime
curves with interquartile bands; confirmed picks) under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import numpy as np
import pyarrow.fs as pafs
import yaml
from ray import tune

from harness import REPO_ROOT, storage
from harness.config import SweepConfig, sweep_from_dict
from harness.objective import Objective
from harness.phase import Phase
from harness.run_layout import SweepLayout

METHODS = {  # name -> (search.sampler, search.scheduler)
    "random": ("random", "none"),
    "random+asha": ("random", "asha"),
    "tpe": ("tpe", "none"),
    "tpe+asha": ("tpe", "asha"),
    "gp": ("gp", "none"),
    "gp+asha": ("gp", "asha"),
    "qmc": ("qmc", "none"),
    "cmaes": ("cmaes", "none"),
}
BASELINE = "random"


class EpochBudget(tune.Stopper):
    """Stops the whole Tune run once its trials have trained ``budget`` epochs between them."""

    def __init__(self, budget: int) -> None:
        self.budget, self.spent = budget, 0
        self.epochs: dict[str, int] = {}  # trial id -> the last epoch counted

    def __call__(self, trial_id: str, result: dict) -> bool:
        # One report per epoch (eval_every 1), counted once: when a function trainable returns, Tune passes its last
        # result to the stopper again (RESULT_DUPLICATE, with done=True), which counted one epoch too many per
        # finished trial (found by the live check of the replay, docs/PERFORMANCE.md).
        epoch = int(result.get("training_iteration", 0))
        if epoch > self.epochs.get(trial_id, 0):
            self.spent += epoch - self.epochs.get(trial_id, 0)
            self.epochs[trial_id] = epoch
        return False

    def stop_all(self) -> bool:
        return self.spent >= self.budget


def anytime(layout: SweepLayout, max_epochs: int, objective: Objective, started: float) -> dict:
    """A repetition's anytime curve, from what its trials wrote: every evaluation (one per epoch) in the
    order it reached storage counts one trial-epoch; after each trial's last evaluation, a point with the
    budget spent, the wall seconds and the incumbent (the best objective among trials that ran the full
    budget: an early-stopped trial ran fewer epochs and is not comparable). Read from storage rather than
    kept in the driver, so an interrupted benchmark resumes with every finished repetition intact."""
    events = []  # (written at, trial, epoch, value)
    for trial in storage.list_names(layout.trials_dir, pafs.FileType.Directory):
        for path in storage.list_files(layout.trial(trial).stage(1).metrics_dir, ".json"):
            with open(path) as f:
                m = json.load(f)
            events.append((os.path.getmtime(path), trial, int(m["epoch"]), objective.value_of(m)))
    events.sort()
    last = {trial: i for i, (_, trial, _, _) in enumerate(events)}
    points, incumbent = [], None
    for i, (written, trial, epoch, value) in enumerate(events):
        if last[trial] != i:
            continue
        if epoch >= max_epochs and value is not None and (incumbent is None or objective.better(value, incumbent[0])):
            incumbent = (value, trial)
        points.append({"trial_epochs": i + 1, "wall_s": round(written - started, 2),
                       "incumbent": None if incumbent is None else incumbent[0],
                       "incumbent_trial": None if incumbent is None else incumbent[1]})
    pick = None
    if incumbent is not None:
        with open(layout.trial(incumbent[1]).params) as f:
            pick = json.load(f)["params"]
    return {"points": points, "trials": len(last), "trial_epochs": len(events),
            "final_incumbent": None if incumbent is None else incumbent[0], "pick": pick}


def bench_sweep(args, name: str, sampler: str, scheduler: str) -> SweepConfig:
    """The demo sweep, cut to Stage-I at this benchmark's size, with one method's sampler and scheduler."""
    with open(args.sweep) as f:
        raw = yaml.safe_load(f)
    raw["name"] = name
    raw["data"]["n"] = args.n
    raw["stage1"]["epochs"] = args.epochs
    gpus = 1.0 / args.concurrent if args.device == "cuda" else 0.0  # trials share the one GPU
    raw["resources"] = {"workers": 0, "cpus_per_worker": args.threads, "gpus_per_worker": gpus}
    raw["train"]["keep_checkpoints"] = 1
    raw["train"]["eval_every"] = 1  # one report per epoch: the budget stopper and the schedulers count reports
    raw["search"].update(sampler=sampler, scheduler=scheduler, num_samples=100_000, max_concurrent=args.concurrent,
                         grace_period=args.grace_period, reduction_factor=args.reduction_factor,
                         startup_trials=args.startup_trials, confirm={"top_k": 1, "seeds": args.confirm_seeds})
    return sweep_from_dict(raw)


def run_repetition(args, root: str, dataset_uri: str, method: str, rep: int, wrap_searcher=None) -> dict:
    """One search of ``method`` with searcher seed ``rep``, stopped at the budget; skipped when an
    earlier run of the benchmark finished it (its repetition.json exists). ``wrap_searcher``: run_phase's."""
    from harness.optuna_space import optuna_space
    from harness.sweep import run_phase
    from harness.trial import PhaseContext

    sampler, scheduler = METHODS[method]
    sweep = bench_sweep(args, f"{method.replace('+', '-')}-r{rep}", sampler, scheduler)
    layout = SweepLayout(root, sweep.name)
    done = storage.join(layout.uri, "repetition.json")  # the benchmark's own file, beside the sweep's
    if os.path.exists(done):
        with open(done) as f:
            record = json.load(f)
    else:
        ctx = PhaseContext(sweep=sweep, layout=layout, dataset_uri=dataset_uri, phase=Phase.STAGE1)
        started, t0 = time.time(), time.perf_counter()
        first = sweep.start_points(Phase.STAGE1) if args.start_points else []
        run_phase(Phase.STAGE1, ctx, optuna_space(sweep.stage1.search), first, sweep, rep,
                  args.epochs, False, None, stop=EpochBudget(args.budget), wrap_searcher=wrap_searcher)
        record = {"method": method, "rep": rep, "searcher_seed": rep, "started": started,
                  "wall_s": round(time.perf_counter() - t0, 1)}
        with open(done, "w") as f:
            json.dump(record, f)
    return {**record, **anytime(layout, args.epochs, sweep.objective, record["started"])}


def confirm_picks(args, root: str, dataset_uri: str, reps: list[dict]) -> dict[str, dict]:
    """Trains every distinct pick and the paper defaults with fresh seeds; config id -> confirmed summary."""
    from harness.confirm import rank_confirmed
    from harness.results import collect_rows, config_id
    from harness.sweep import confirm_phase
    from harness.trial import PhaseContext

    sweep = bench_sweep(args, "confirm", "tpe", "none")
    defaults = sweep.first_point(Phase.STAGE1)
    candidates, seen = [defaults], {config_id(defaults)}
    for r in reps:
        if r["pick"] is not None and config_id(r["pick"]) not in seen:
            seen.add(config_id(r["pick"]))
            candidates.append(r["pick"])
    layout = SweepLayout(root, sweep.name)
    ctx = PhaseContext(sweep=sweep, layout=layout, dataset_uri=dataset_uri, phase=Phase.STAGE1,
                       candidates=tuple(candidates))
    confirm_phase(Phase.STAGE1, ctx, sweep, False, None)
    ranked = rank_confirmed(collect_rows(layout, sweep), Phase.STAGE1, sweep.objective,
                            config_id(defaults))
    return {c.config_id: {"mean": c.summary.mean, "sd": c.summary.sd, "ci": [c.summary.low, c.summary.high],
                          "values": list(c.values), "is_default": c.is_default} for c in ranked}


def _nan_stat(fn, curves: np.ndarray, *args) -> list:
    """A per-budget statistic over repetitions, NaN where no repetition has an incumbent yet."""
    if not len(curves):
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: before any full-budget trial ended
        return fn(curves, *args, axis=0).tolist()


def curve_on_grid(points: list[dict], grid: np.ndarray) -> np.ndarray:
    """The incumbent after each budget in ``grid`` (NaN before the first full-budget trial ended)."""
    out = np.full(len(grid), np.nan)
    for p in points:
        if p["incumbent"] is not None:
            out[grid >= p["trial_epochs"]] = p["incumbent"]
    return out


def analyse(args, reps: list[dict], confirmed: dict[str, dict]) -> dict:
    from scipy import stats

    from harness.results import config_id

    grid = np.arange(1, args.budget + 1)
    methods = [m for m in args.methods if any(r["method"] == m for r in reps)]
    curves = {m: np.array([curve_on_grid(r["points"], grid) for r in reps if r["method"] == m]) for m in methods}
    summary: dict[str, dict] = {}
    for m in methods:
        finals = [r["final_incumbent"] for r in reps if r["method"] == m and r["final_incumbent"] is not None]
        picks = [confirmed[config_id(r["pick"])]["mean"] for r in reps if r["method"] == m and r["pick"] is not None]
        median = np.array(_nan_stat(np.nanmedian, curves[m]) or np.full(len(grid), np.nan))
        summary[m] = {
            "reps": len([r for r in reps if r["method"] == m]),
            "median_final_incumbent": float(np.median(finals)) if finals else None,
            "iqr_final_incumbent": [float(np.percentile(finals, 25)), float(np.percentile(finals, 75))] if finals else None,
            "median_trials": float(np.median([r["trials"] for r in reps if r["method"] == m])),
            "median_wall_s": float(np.median([r["wall_s"] for r in reps if r["method"] == m])),
            "confirmed_picks": picks,
            "median_confirmed_pick": float(np.median(picks)) if picks else None,
            "_median_curve": median,
        }
    out: dict = {"methods": {}}
    target = summary.get(BASELINE, {}).get("median_final_incumbent")
    base_epochs = None
    if target is not None:
        reached = np.nonzero(summary[BASELINE]["_median_curve"] <= target)[0]
        base_epochs = int(grid[reached[0]]) if len(reached) else None
    out["target"] = {"what": f"{BASELINE}'s median final incumbent", "fid": target, "trial_epochs_for_random": base_epochs}
    for m, s in summary.items():
        curve = s.pop("_median_curve")
        if target is not None:
            reached = np.nonzero(curve <= target)[0]
            s["trial_epochs_to_target"] = int(grid[reached[0]]) if len(reached) else None
            s["budget_ratio_to_random"] = (round(s["trial_epochs_to_target"] / base_epochs, 3)
                                           if s["trial_epochs_to_target"] and base_epochs else None)
        base = summary.get(BASELINE, {}).get("confirmed_picks") or []
        if m != BASELINE and len(s["confirmed_picks"]) >= 2 and len(base) >= 2:
            p = stats.ttest_ind(s["confirmed_picks"], base, equal_var=False, alternative="less").pvalue
            s["confirmed_vs_random_p"] = None if np.isnan(p) else round(float(p), 4)
            s["beats_random_beyond_noise"] = bool(p < 0.05)
        out["methods"][m] = s
    defaults = next((c for c in confirmed.values() if c["is_default"]), None)
    out["paper_defaults_confirmed"] = defaults
    out["curves"] = {m: {"trial_epochs": grid.tolist(), "median": _nan_stat(np.nanmedian, c),
                         "q25": _nan_stat(np.nanpercentile, c, 25), "q75": _nan_stat(np.nanpercentile, c, 75)}
                     for m, c in curves.items()}
    return out


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_pick) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for i, (m, c) in enumerate(result["curves"].items()):
        colour = f"C{i}"
        x = np.array(c["trial_epochs"])
        ax.plot(x, c["median"], color=colour, label=m)
        ax.fill_between(x, c["q25"], c["q75"], color=colour, alpha=0.2)
        picks = result["methods"][m]["confirmed_picks"]
        ax_pick.scatter([i] * len(picks), picks, color=colour, marker="x")
    if result["target"]["fid"] is not None:
        ax.axhline(result["target"]["fid"], color="grey", linestyle=":", label="random's final median")
    d = result["paper_defaults_confirmed"]
    if d:
        ax_pick.axhspan(d["ci"][0], d["ci"][1], color="grey", alpha=0.2, label="paper defaults, 95 % interval")
        ax_pick.legend(fontsize=7)
    ax.set_xlabel("cumulative trial-epochs")
    ax.set_ylabel("incumbent judge-FID (lower is better)")
    ax.set_title("anytime incumbent: median and interquartile band over repetitions")
    ax.legend(fontsize=8)
    names = list(result["curves"])
    ax_pick.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax_pick.set_ylabel("confirmed mean judge-FID of the final pick")
    ax_pick.set_title("each repetition's pick, re-trained with fresh seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="random,random+asha,tpe,tpe+asha",
                   help=f"comma-separated, from {', '.join(METHODS)} (default: %(default)s)")
    p.add_argument("--reps", type=int, default=5, help="repetitions per method, searcher seeds 0..reps-1")
    p.add_argument("--budget", type=int, default=48, help="trial-epochs per repetition")
    p.add_argument("--epochs", type=int, default=6, help="a trial's full budget in epochs")
    p.add_argument("--n", type=int, default=1000, help="shapes scenes (90 %% train)")
    p.add_argument("--confirm-seeds", type=int, default=2, help="fresh training seeds per pick")
    p.add_argument("--concurrent", type=int, default=2, help="trials at once")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per trial")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial may be stopped")
    p.add_argument("--reduction-factor", type=int, default=3, help="ASHA: keep 1/rf of the trials at each rung")
    p.add_argument("--startup-trials", type=int, default=4,
                   help="TPE/GP: random trials before the model is used (Optuna's 10 would leave a 48-epoch "
                        "budget without ASHA, 8 trials, all random)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--sweep", default=os.path.join(REPO_ROOT, "search_spaces", "shapes.yaml"),
                   help="the sweep file whose data, model, training and Stage-I space are benchmarked (default: the demo)")
    p.add_argument("--out", default="runs/search-efficiency", help="local directory: the trials, the JSON and the PNG")
    p.add_argument("--replay", metavar="GRID", help="replay searches over objective_noise.py's grid.jsonl (no training)")
    p.add_argument("--over", metavar="GRID",
                   help="live searches whose trials train only the configs of objective_noise.py's grid.jsonl, "
                        "checked against the replay of the same searches (pass the grid's --epochs and --n)")
    p.add_argument("--replay-reps", type=int, default=200, help="--over: replayed repetitions per method")
    p.add_argument("--no-start-points", dest="start_points", action="store_false",
                   help="searches start from their sampler alone, not the sweep's start points")
    p.add_argument("--objective", action="append", metavar="KEY:METRIC:WINDOW",
                   help="--replay: an objective of the grid, e.g. live/base:fid:1 (repeatable; default: that one)")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.replay:
        from search_replay import REPLAY_METHODS, ObjectiveSpec

        bad = [m for m in args.methods if m not in REPLAY_METHODS]
        if bad:
            p.error(f"--methods: {bad[0]!r} cannot be replayed; known: {', '.join(REPLAY_METHODS)}")
        if not os.path.exists(args.replay):
            p.error(f"--replay: {args.replay} does not exist (record it with benchmarks/objective_noise.py)")
        try:
            args.objective = [ObjectiveSpec.parse(o) for o in (args.objective or ["live/base:fid:1"])]
        except ValueError:
            p.error(f"--objective: expected KEY:METRIC:WINDOW, e.g. live/base:fid:1, got {args.objective}")
        return args
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        p.error(f"--methods: unknown method {bad[0]!r}; known: {', '.join(METHODS)}")
    if args.budget < args.epochs or args.reps < 1 or args.confirm_seeds < 2:
        p.error("--budget must be >= --epochs, --reps >= 1 and --confirm-seeds >= 2")
    if storage.is_s3(args.out):
        p.error("--out: a local directory (the plot is written with matplotlib)")
    if args.over and not os.path.exists(args.over):
        p.error(f"--over: {args.over} does not exist (record it with benchmarks/objective_noise.py)")
    return args


def main_replay(args) -> int:
    from search_replay import plot as plot_replay
    from search_replay import run as run_replay

    from harness.config import load_sweep

    with open(args.replay) as f:
        runs = [json.loads(line) for line in f]
    t0 = time.perf_counter()
    result = run_replay(runs, load_sweep(args.sweep), args.objective, args.methods, args.reps, args.budget,
                        args.grace_period, args.reduction_factor, args.startup_trials, args.start_points)
    result = {"grid": args.replay, "machine": {"cpu": platform.processor() or platform.machine()}, **result,
              "wall_s": round(time.perf_counter() - t0, 1)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "search_replay.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot_replay(result, os.path.join(args.out, "search_replay.png"))
    brief = {name: {m: {k: v for k, v in r.items() if not k.startswith("curve")} for m, r in o["methods"].items()}
             for name, o in result["objectives"].items()}
    print(json.dumps({"wall_s": result["wall_s"], "objectives": brief}, indent=1))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.replay:
        return main_replay(args)
    if args.over:
        from replay_check import main_over

        return main_over(args, bench_sweep, run_repetition)
    from harness.cli import start_ray
    from harness.data.ensure import ensure_dataset

    root = storage.normalize(args.out)
    t0 = time.perf_counter()
    probe = bench_sweep(args, "probe", "tpe", "none")
    dataset_uri = ensure_dataset(root, probe.data, probe.model.profile)
    start_ray()
    reps = []
    for rep in range(args.reps):  # interleaved, so a change of machine speed hits every method alike
        for method in args.methods:
            reps.append(run_repetition(args, root, dataset_uri, method, rep))
            print(json.dumps({k: v for k, v in reps[-1].items() if k != "points"}, default=str), file=sys.stderr,
                  flush=True)
    confirmed = confirm_picks(args, root, dataset_uri, reps)
    result = {"settings": {k: v for k, v in vars(args).items()}, "machine": {"cpus": os.cpu_count(),
                                                                             "platform": platform.platform()},
              **analyse(args, reps, confirmed), "repetitions": reps, "confirmed": confirmed,
              "wall_s": round(time.perf_counter() - t0, 1)}
    with open(os.path.join(root, "search_efficiency.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    plot(result, os.path.join(root, "search_efficiency.png"))
    print(json.dumps({k: v for k, v in result.items() if k not in ("repetitions", "curves", "confirmed")}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
