"""A StackGAN hyperparameter sweep with Ray Tune + Optuna, ending in a leaderboard.

    python harness/tune.py                      the demo: shapes data, small profile, local Ray, ./runs
    python harness/tune.py --smoke-test         search_spaces/smoke.yaml: tiny trials through both stages
    ray job submit --working-dir . -- python harness/tune.py --sweep FILE --storage s3://bucket/prefix

Strategies: ``staged`` (a Stage-I sweep, then a Stage-II sweep starting from the top-k Stage-I
checkpoints) or ``joint`` (each trial trains both stages with its own values). The searcher is
Optuna's multivariate TPE, seeded, with the sweep's defaults (the paper's values) as the first
point; ASHA stops weak trials early. Everything lands under <storage>/<name>/: tune/ (Tune and
searcher state, for --resume), trials/, results.parquet and report/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

if __package__ in (None, ""):  # `python harness/x.py`: see harness/_script_path.py
    import _script_path  # noqa: F401

from harness import REPO_ROOT, cli, ray_compat, storage  # noqa: E402
from harness.config import SweepConfig, load_sweep  # noqa: E402
from harness.config_fields import replaced  # noqa: E402
from harness.errors import ConfigError, NoResults  # noqa: E402
from harness.preflight import check_inputs  # noqa: E402
from harness.run_layout import SweepLayout  # noqa: E402

DEFAULT_SWEEP = os.path.join(REPO_ROOT, "search_spaces", "shapes.yaml")
SMOKE_SWEEP = os.path.join(REPO_ROOT, "search_spaces", "smoke.yaml")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", help="sweep YAML (default: search_spaces/shapes.yaml)")
    p.add_argument("--storage", default="./runs", help="local path or s3://bucket/prefix (default ./runs)")
    storage.add_endpoint_argument(p)
    p.add_argument("--name", help="sweep name under the storage root (default: the sweep file's name)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    p.add_argument("--smoke-test", action="store_true", help="run search_spaces/smoke.yaml (tiny, minutes)")
    p.add_argument("--num-samples", type=int, help="trials per phase")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: what the cluster fits)")
    p.add_argument("--time-budget", type=float, help="seconds for the whole sweep")
    p.add_argument("--strategy", choices=["staged", "joint"], help="override the sweep's strategy")
    return p.parse_args(argv)


def resolve_sweep(args) -> SweepConfig:
    path = SMOKE_SWEEP if args.smoke_test and not args.sweep else (args.sweep or DEFAULT_SWEEP)
    sweep = load_sweep(path)
    try:
        sweep.require_search_space()
        check_inputs(sweep.data)  # before Ray: a missing file would fail every trial three times
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    search = sweep.search
    overrides = {"num_samples": args.num_samples, "max_concurrent": args.max_concurrent,
                 "time_budget_s": args.time_budget, "strategy": args.strategy}
    search = replaced(search, "search", **{k: v for k, v in overrides.items() if v is not None})
    return replaced(sweep, "", search=search, name=args.name or sweep.name)


# A finished trial's process runs the next trial of its Tune run: a new trial process spends seconds importing
# torch, Ray Tune and the harness before it trains (about 4 s of each short demo trial).
REUSE_ACTORS = True
BUDGET_REACHED = 0.98  # a Tune run that lasted this share of its time budget was stopped by it


class SweepFailed(NoResults):
    """The sweep ran but produced nothing to rank (every trial diverged or none reported): exit 1."""


def _fit(name: str, ctx, sweep: SweepConfig, resume: bool, make_tuner):
    """Runs (or, with ``resume``, restores) the Tune run ``name`` under <sweep>/tune/ and returns its ResultGrid.
    ``make_tuner(trainable, tune_root)`` builds a new Tuner when there is nothing to restore."""
    from ray import tune

    from harness.searcher import trial_resources
    from harness.trial import stage_trial

    tune_root = ctx.layout.tune_dir
    tune_path = ctx.layout.tune_run(name)  # the storage root is already absolute (main normalises it)
    trainable = tune.with_parameters(tune.with_resources(stage_trial, trial_resources(sweep.resources)), ctx=ctx)
    if resume and tune.Tuner.can_restore(tune_path):
        print(f"resuming {name} from {tune_path}", flush=True)
        ray_compat.reconcile_search_on_restore()
        return tune.Tuner.restore(tune_path, trainable=trainable, resume_unfinished=True, resume_errored=True).fit()
    return make_tuner(trainable, tune_root).fit()


def _concurrency(sweep: SweepConfig, runs: int) -> int:
    from harness.capacity import cluster_capacity
    from harness.searcher import max_concurrent_trials

    return sweep.search.max_concurrent or max_concurrent_trials(sweep.resources, cluster_capacity(), runs)


def run_phase(phase: str, ctx, space: dict, start_points: list[dict], sweep: SweepConfig, seed: int, max_epochs: int,
              resume: bool, budget_s: float | None, study=None, stop=None, callbacks=()):
    """The search of one phase: Optuna's sampler proposes, the scheduler stops weak trials early.

    ``study`` (a harness.study.StudyStore) makes the Optuna study persistent: it continues the
    phase's study from earlier runs and evaluates the start points (the paper defaults first) only when that
    study is still empty.
    ``stop`` (a Tune Stopper, e.g. a budget of trial-epochs) and ``callbacks`` (the MLflow logger) go to
    the Tune run as they are."""
    from ray import tune

    from harness.searcher import make_scheduler, make_searcher

    search = sweep.search

    def make_tuner(trainable, tune_root):
        first = start_points
        persistent = {}
        if study is not None:
            name = study.study_name(sweep.name, phase)
            persistent = {"study_name": name, "storage": study.storage()}
            if study.count_trials(name) > 0:
                first = []  # evaluated on an earlier night already
        searcher = make_searcher(space, first, search.objective, search.mode, seed,
                                 final_stage=2 if phase != "stage1" else 1, sampler=search.sampler,
                                 startup_trials=search.startup_trials, **persistent)
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=make_scheduler(search.scheduler, max_epochs, search.grace_period, search.reduction_factor),
                metric=search.objective, mode=search.mode, num_samples=search.num_samples,
                max_concurrent_trials=_concurrency(sweep, search.num_samples), time_budget_s=budget_s,
                reuse_actors=REUSE_ACTORS,
            ),
            run_config=tune.RunConfig(name=phase, storage_path=tune_root, stop=stop, callbacks=list(callbacks),
                                      failure_config=tune.FailureConfig(max_failures=search.max_failures)),
        )

    return _fit(phase, ctx, sweep, resume, make_tuner)


def confirm_phase(phase: str, ctx, sweep: SweepConfig, resume: bool, budget_s: float | None, callbacks=()):
    """Confirmation runs of one phase as Tune trials: every candidate (``ctx.candidates``) x every fresh
    training seed, at the full budget (no scheduler), as many at once as the cluster fits. Tune makes
    them fault tolerant and resumable like the search; their rows say ``source: confirm``."""
    from ray import tune

    from harness.confirm import confirmation_seeds

    seeds = confirmation_seeds(sweep.train.seed, sweep.search.confirm.seeds)
    runs = len(ctx.candidates) * len(seeds)
    print(f"{phase}: confirming {len(ctx.candidates)} configs (the paper defaults and the top "
          f"{len(ctx.candidates) - 1}) with training seeds {seeds}: {runs} runs at the full budget", flush=True)

    def make_tuner(trainable, tune_root):
        return tune.Tuner(
            trainable,
            param_space={"candidate": tune.grid_search(list(range(len(ctx.candidates)))),
                         "train_seed": tune.grid_search(seeds)},
            tune_config=tune.TuneConfig(metric=sweep.search.objective, mode=sweep.search.mode, num_samples=1,
                                        max_concurrent_trials=_concurrency(sweep, runs), time_budget_s=budget_s,
                                        reuse_actors=REUSE_ACTORS),
            run_config=tune.RunConfig(name=f"{phase}-confirm", storage_path=tune_root, callbacks=list(callbacks),
                                      failure_config=tune.FailureConfig(max_failures=sweep.search.max_failures)),
        )

    return _fit(f"{phase}-confirm", ctx, sweep, resume, make_tuner)


def run_sweep(sweep: SweepConfig, storage_root: str, *, resume: bool = False, dataset_root: str | None = None,
              study=None) -> tuple[dict, dict]:
    """Runs every phase of ``sweep`` under <storage_root>/<sweep.name>/ and writes its report.

    Returns (record, report). Ray must be started. Raises HarnessError for unusable input and
    SweepFailed when no trial produced anything to rank. ``dataset_root`` (default: storage_root)
    is where the dataset is built and reused. ``study`` (a StudyStore) makes the Optuna studies
    persistent across sweeps; without it they live in the sweep's own journal (optuna-dashboard reads it),
    started afresh unless ``resume``.
    """
    from harness.capacity import check_cluster_fits
    from harness.confirm import confirmation_candidates
    from harness.data.ensure import ensure_dataset
    from harness.mlflow_log import open_sweep_run
    from harness.report import build_report
    from harness.searcher import derive_seed, optuna_space
    from harness.trial import PhaseContext

    t0 = time.perf_counter()
    check_cluster_fits(sweep.resources)
    layout = SweepLayout(storage_root, sweep.name)
    record_uri = layout.record
    mlflow_run = open_sweep_run(sweep, layout)  # None unless an MLflow tracking URI is set

    def callbacks(name: str) -> list:
        return [mlflow_run.callback(name)] if mlflow_run is not None else []

    persistent = study is not None
    if not persistent:
        from harness.study import StudyStore

        study = StudyStore(layout.study_journal)
        if not resume:
            study.reset(sweep.name)
    if resume and storage.exists(record_uri):
        record = json.loads(storage.read_bytes(record_uri))
    else:
        record = {"sweep": dataclasses.asdict(sweep), "seed": derive_seed(sweep.search.seed), "started": time.time()}
    seed = record["seed"]
    dataset_uri = ensure_dataset(dataset_root or storage_root, sweep.data, sweep.model.profile)
    storage.write_bytes(record_uri, json.dumps(record, indent=2, default=str).encode())

    budget = sweep.search.time_budget_s

    def budget_left(share: float = 1.0):
        """Seconds for the next phase: ``share`` of what is left of the sweep's time budget."""
        return None if budget is None else max(1.0, share * (budget - (time.perf_counter() - t0)))

    base = dict(sweep=sweep, layout=layout, dataset_uri=dataset_uri)
    confirming = sweep.search.confirm.enabled
    # Shares of what is left of a time budget: each stage's search leaves room for its confirmations,
    # and Stage-I leaves Stage-II its turn.
    search_share = 0.6 if confirming else 1.0

    def within_budget(name: str, budget_s: float | None, fit) -> None:
        """Runs one Tune run; when Tune's time budget stopped it, records its name in sweep.json's
        ``budget_ended`` (the leaderboard says so). A search phase's trials still RUNNING in its study once
        its Tune run is over were stopped: by the time budget, or with a driver that died before Tune saved
        them (the restored run trained a replacement). The study is told they were pruned."""
        started = time.perf_counter()
        fit()
        if budget_s is not None and time.perf_counter() - started >= BUDGET_REACHED * budget_s:
            if name not in record.setdefault("budget_ended", []):
                record["budget_ended"].append(name)
            storage.write_bytes(record_uri, json.dumps(record, indent=2, default=str).encode())
        if not name.endswith("-confirm"):
            study.prune_unfinished(study.study_name(sweep.name, name))

    def search_and_confirm(phase: str, ctx, space: dict, search_epochs: int, phase_seed: int, share: float) -> None:
        search_budget = budget_left(share * search_share)
        within_budget(phase, search_budget, lambda: run_phase(
            phase, ctx, space, sweep.start_points(phase), sweep, phase_seed, search_epochs, resume, search_budget, study,
            callbacks=callbacks(phase)))
        if confirming:
            key = f"{phase}_confirm_candidates"  # recorded, so a resumed sweep confirms the same configs
            if key not in record:
                record[key] = confirmation_candidates(search_ranking(layout, sweep, phase), sweep.first_point(phase),
                                                      sweep.search.confirm.top_k)
                storage.write_bytes(record_uri, json.dumps(record, indent=2, default=str).encode())
            confirm_budget = budget_left(share)
            within_budget(f"{phase}-confirm", confirm_budget, lambda: confirm_phase(
                phase, dataclasses.replace(ctx, candidates=tuple(record[key])), sweep, resume, confirm_budget,
                callbacks(f"{phase}-confirm")))

    if sweep.search.strategy == "staged":
        search_and_confirm("stage1", PhaseContext(phase="stage1", **base), optuna_space(sweep.stage1.search),
                           sweep.stage1.budget("search"), seed, 0.5)
        parents = top_stage1_checkpoints(layout, sweep)
        if not parents:
            raise SweepFailed("no Stage-I trial produced a checkpoint (all diverged?)")
        import optuna

        # Always top_k choices, even when fewer Stage-I trials survived: a persistent study refuses a
        # parameter whose distribution changes between sweeps. trial.py maps a missing rank to the last.
        space2 = {**optuna_space(sweep.stage2.search),
                  "stage1_parent": optuna.distributions.CategoricalDistribution(list(range(sweep.search.top_k)))}
        search_and_confirm("stage2", PhaseContext(phase="stage2", stage1_parents=tuple(parents), **base), space2,
                           sweep.stage2.budget("search"), seed + 1, 1.0)
        record["stage1_parents"] = parents
    else:
        space = {**optuna_space(sweep.stage1.search, "s1."), **optuna_space(sweep.stage2.search, "s2.")}
        search_and_confirm("joint", PhaseContext(phase="joint", **base), space,
                           sweep.stage1.budget("search") + sweep.stage2.budget("search"), seed, 1.0)
    record["wall_seconds"] = round(time.perf_counter() - t0, 1)
    storage.write_bytes(record_uri, json.dumps(record, indent=2, default=str).encode())
    final_phase = "stage2" if sweep.search.strategy == "staged" else "joint"
    # A persistent study holds every night's trials: importances rest on all of them.
    study_trials = study.trials(study.study_name(sweep.name, final_phase)) if persistent else None
    try:
        report = build_report(layout, sweep, record, study_trials)
    except NoResults as exc:
        if mlflow_run is not None:
            mlflow_run.finish("FAILED")
        raise SweepFailed(str(exc)) from exc
    if mlflow_run is not None:
        mlflow_run.finish()
    return record, report


def main(argv=None) -> int:
    args = parse_args(argv)
    cli.use_storage_arguments(args)
    return cli.run(lambda: _sweep_command(args))


def _sweep_command(args) -> int:
    from harness.preflight import preflight

    sweep = resolve_sweep(args)  # validated before Ray starts
    preflight(args.storage)  # before Ray and before any trial: fail fast on unusable storage
    cli.start_ray()
    record, out = run_sweep(sweep, args.storage, resume=args.resume)
    print_leaderboard(out, sweep, record)
    return cli.EXIT_OK


def search_ranking(layout: SweepLayout, sweep: SweepConfig, phase: str) -> list[dict]:
    """The search trials of ``phase``, best first (one seed each, at the budget the scheduler gave them)."""
    from harness.report import rank_trials
    from harness.results import collect_rows

    rows = [r for r in collect_rows(layout, sweep) if r["phase"] == phase and r["source"] == "search"]
    return rank_trials(rows, 1 if phase == "stage1" else 2, sweep.search.objective, sweep.search.mode)


def top_stage1_checkpoints(layout: SweepLayout, sweep: SweepConfig) -> list[str]:
    """The best checkpoints of the top-k Stage-I configs, best first: by confirmed mean over seeds when
    confirmation runs are on (each config's best seed run), then by the search's ranking."""
    from harness.checkpoint import best
    from harness.confirm import config_id, rank_confirmed
    from harness.report import rank_trials
    from harness.results import collect_rows

    metric, mode = sweep.search.objective, sweep.search.mode
    rows = [r for r in collect_rows(layout, sweep) if r["phase"] == "stage1"]
    ordered: list[tuple[str, str]] = []  # (config id, trial id) in rank order
    if sweep.search.confirm.enabled:
        confirmed = rank_confirmed(rows, "stage1", metric, mode, config_id(sweep.first_point("stage1")))
        ordered += [(c.config_id, c.best_trial) for c in confirmed if c.diverged < len(c.values)]
    searched = rank_trials([r for r in rows if r["source"] == "search"], 1, metric, mode)
    ordered += [(e["config_id"], e["trial_id"]) for e in searched if e["final_status"] != "diverged"]
    parents, seen = [], set()
    for cid, trial_id in ordered:
        if cid in seen:
            continue
        ckpt = best(layout.trial(trial_id).stage(1), metric, mode)
        if ckpt:
            seen.add(cid)
            parents.append(ckpt)
        if len(parents) == sweep.search.top_k:
            break
    return parents


def print_leaderboard(out: dict, sweep: SweepConfig, record: dict) -> None:
    from harness.confirm import params_of

    metric = sweep.search.objective
    print(f"\n=== Leaderboard: {sweep.name} ({sweep.search.strategy}, {metric}, {sweep.search.mode}) ===")
    if out["confirmed"]:
        print(f"confirmed configs, ranked by mean {metric} over seeds (95 % interval):")
        for i, c in enumerate(out["confirmed"], 1):
            s = c.summary
            print(f"{i:2d}. {c.config_id}{' (paper defaults)' if c.is_default else ''}  {metric}={s.mean:.4g} "
                  f"[{s.low:.4g}, {s.high:.4g}] over {s.n} seeds  {_shown_params(c.params)}")
            print(f"    {c.verdict.sentence}")
        print("search trials (one seed each):")
    for i, e in enumerate(out["ranked"], 1):
        params = params_of(e)
        fid = f" fidelity={e['fidelity']:.3f}" if "fidelity" in e else ""
        print(f"{i:2d}. {e['trial_id']}  {metric}={e[metric]:.4g}{fid}  [{e['final_status']}, epoch {e['epoch']}]  "
              f"{_shown_params(params)}")
    print(f"cost: {json.dumps(out['cost'])}")
    print(f"wall time: {record['wall_seconds']} s")
    print(f"report: {out['report']}")


def _shown_params(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


if __name__ == "__main__":
    sys.exit(main())
