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

if __package__ in (None, ""):  # `python harness/tune.py` without installing: put the repo on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import REPO_ROOT, storage  # noqa: E402
from harness.config import SweepConfig, load_sweep  # noqa: E402
from harness.errors import HarnessError  # noqa: E402

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
    search = sweep.search
    overrides = {"num_samples": args.num_samples, "max_concurrent": args.max_concurrent,
                 "time_budget_s": args.time_budget, "strategy": args.strategy}
    search = dataclasses.replace(search, **{k: v for k, v in overrides.items() if v is not None})
    search.validate("search")
    sweep = dataclasses.replace(sweep, search=search, name=args.name or sweep.name)
    sweep.validate("")
    return sweep


CREDENTIAL_ENV_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"}


def keep_credentials_out_of_runtime_env() -> None:
    """Ray Tune copies the driver's AWS key variables into every trial actor's runtime_env
    (ray/tune/execution/class_cache.py), and Ray's runtime-env agent writes runtime_envs to its log.
    Credentials must appear in neither: trials take them from their node (environment or instance
    role), as Ray Train workers already do. Found by the secret scan in tests/test_sweep.py."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = (frozenset(class_cache.ENV_VARS_TO_PROPAGATE) - CREDENTIAL_ENV_VARS) \
        | set(storage.ENDPOINT_ENV_VARS)  # the endpoint is no secret, and remote trials need it


class SweepFailed(RuntimeError):
    """The sweep ran but produced nothing to rank (every trial diverged or none reported)."""


def run_phase(phase: str, ctx, space: dict, first_point: dict, sweep: SweepConfig, seed: int, max_epochs: int,
              resume: bool, budget_s: float | None, study=None):
    """One Tune run of one phase. ``study`` (a harness.study.StudyStore) makes the Optuna study
    persistent: it continues the phase's study from earlier runs and evaluates the paper defaults
    only when that study is still empty."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from harness.capacity import cluster_capacity
    from harness.searcher import make_searcher, max_concurrent_trials, trial_resources
    from harness.trial import stage_trial

    tune_root = storage.join(ctx.sweep_root, "tune")
    tune_path = storage.join(tune_root, phase)  # the storage root is already absolute (main normalises it)
    trainable = tune.with_parameters(tune.with_resources(stage_trial, trial_resources(sweep.resources)), ctx=ctx)
    if resume and tune.Tuner.can_restore(tune_path):
        print(f"resuming {phase} from {tune_path}", flush=True)
        tuner = tune.Tuner.restore(tune_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        metric, mode = sweep.search.objective, sweep.search.mode
        concurrent = sweep.search.max_concurrent or max_concurrent_trials(
            sweep.resources, cluster_capacity(), sweep.search.num_samples)
        persistent = {}
        if study is not None:
            name = study.study_name(sweep.name, phase)
            persistent = {"study_name": name, "storage": study.storage()}
            if study.count_trials(name) > 0:
                first_point = {}  # evaluated on an earlier night already
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=make_searcher(space, first_point, metric, mode, seed, final_stage=2 if phase != "stage1" else 1,
                                         **persistent),
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=max_epochs,
                                        grace_period=min(sweep.search.grace_period, max_epochs)),
                metric=metric, mode=mode, num_samples=sweep.search.num_samples,
                max_concurrent_trials=concurrent, time_budget_s=budget_s,
            ),
            run_config=tune.RunConfig(name=phase, storage_path=tune_root,
                                      failure_config=tune.FailureConfig(max_failures=sweep.search.max_failures)),
        )
    results = tuner.fit()
    if study is not None:
        study.sync()  # the night's trials reach the study's home even if a later phase fails
    return results


def start_ray() -> None:
    """Joins the cluster (RAY_ADDRESS, as under `ray job submit`) or starts a local one; used by every command."""
    import ray

    keep_credentials_out_of_runtime_env()
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()  # under `ray job submit`: the entrypoint is told the cluster's address
        else:
            ray.init(runtime_env={"env_vars": {"PYTHONPATH": worker_pythonpath(), **storage.endpoint_env()}})


def worker_pythonpath() -> str:
    """The repo first, then whatever PYTHONPATH the driver has (a user's site dir must reach workers too)."""
    return os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p)


def run_sweep(sweep: SweepConfig, storage_root: str, *, resume: bool = False, dataset_root: str | None = None,
              study=None) -> tuple[dict, dict]:
    """Runs every phase of ``sweep`` under <storage_root>/<sweep.name>/ and writes its report.

    Returns (record, report). Ray must be started. Raises HarnessError for unusable input and
    SweepFailed when no trial produced anything to rank. ``dataset_root`` (default: storage_root)
    is where the dataset is built and reused; ``study`` makes the Optuna studies persistent.
    """
    from harness.capacity import check_cluster_fits
    from harness.data.ensure import ensure_dataset
    from harness.report import build_report
    from harness.searcher import derive_seed, optuna_space
    from harness.trial import PhaseContext

    t0 = time.perf_counter()
    check_cluster_fits(sweep.resources)
    sweep_root = storage.join(storage_root, sweep.name)
    record_uri = storage.join(sweep_root, "sweep.json")
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

    base = dict(sweep=sweep, sweep_root=sweep_root, storage_root=storage_root, dataset_uri=dataset_uri)
    if sweep.search.strategy == "staged":
        # Half of a time budget for Stage-I, so Stage-II always gets its turn.
        run_phase("stage1", PhaseContext(phase="stage1", **base), optuna_space(sweep.stage1.search),
                  sweep.first_point("stage1"), sweep, seed, sweep.stage1.epochs, resume, budget_left(0.5), study)
        parents = top_stage1_checkpoints(storage_root, sweep)
        if not parents:
            raise SweepFailed("no Stage-I trial produced a checkpoint (all diverged?)")
        import optuna

        # Always top_k choices, even when fewer Stage-I trials survived: a persistent study refuses a
        # parameter whose distribution changes between sweeps. trial.py maps a missing rank to the last.
        space2 = {**optuna_space(sweep.stage2.search),
                  "stage1_parent": optuna.distributions.CategoricalDistribution(list(range(sweep.search.top_k)))}
        run_phase("stage2", PhaseContext(phase="stage2", stage1_parents=tuple(parents), **base), space2,
                  sweep.first_point("stage2"), sweep, seed + 1, sweep.stage2.epochs, resume, budget_left(), study)
        record["stage1_parents"] = parents
    else:
        space = {**optuna_space(sweep.stage1.search, "s1."), **optuna_space(sweep.stage2.search, "s2.")}
        run_phase("joint", PhaseContext(phase="joint", **base), space, sweep.first_point("joint"), sweep, seed,
                  sweep.stage1.epochs + sweep.stage2.epochs, resume, budget_left(), study)
    record["wall_seconds"] = round(time.perf_counter() - t0, 1)
    storage.write_bytes(record_uri, json.dumps(record, indent=2, default=str).encode())
    try:
        report = build_report(storage_root, sweep, record)
    except ValueError as exc:  # no trial reported an evaluation
        raise SweepFailed(str(exc)) from exc
    return record, report


def main(argv=None) -> int:
    args = parse_args(argv)
    storage.use_endpoint(args.s3_endpoint)
    args.storage = storage.normalize(args.storage)  # trial processes run in other directories
    try:
        sweep = resolve_sweep(args)  # validated before Ray starts
        from harness.preflight import preflight

        preflight(args.storage)  # before Ray and before any trial: fail fast on unusable storage
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start_ray()
    try:
        record, out = run_sweep(sweep, args.storage, resume=args.resume)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SweepFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_leaderboard(out, sweep, record)
    return 0


def top_stage1_checkpoints(storage_root: str, sweep: SweepConfig) -> list[str]:
    """Best checkpoint of each of the top-k Stage-I trials, best first."""
    from harness.checkpoint import best
    from harness.report import rank_trials
    from harness.results import collect_rows

    rows = [r for r in collect_rows(storage_root, sweep) if r["phase"] == "stage1"]
    parents = []
    for e in rank_trials(rows, 1, sweep.search.objective, sweep.search.mode):
        if e["final_status"] == "diverged":
            continue
        ckpt = best(storage.join(storage_root, sweep.name, "trials", e["trial_id"], "stage1"),
                    sweep.search.objective, sweep.search.mode)
        if ckpt:
            parents.append(ckpt)
        if len(parents) == sweep.search.top_k:
            break
    return parents


def print_leaderboard(out: dict, sweep: SweepConfig, record: dict) -> None:
    metric = sweep.search.objective
    print(f"\n=== Leaderboard: {sweep.name} ({sweep.search.strategy}, {metric}, {sweep.search.mode}) ===")
    for i, e in enumerate(out["ranked"], 1):
        params = {k.split(".", 1)[1]: v for k, v in e.items() if k.startswith("param.")}
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))
        fid = f" fidelity={e['fidelity']:.3f}" if "fidelity" in e else ""
        print(f"{i:2d}. {e['trial_id']}  {metric}={e[metric]:.4g}{fid}  [{e['final_status']}]  {shown}")
    print(f"cost: {json.dumps(out['cost'])}")
    print(f"wall time: {record['wall_seconds']} s")
    print(f"report: {out['report']}")


if __name__ == "__main__":
    sys.exit(main())
