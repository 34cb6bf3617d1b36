"""A StackGAN hyperparameter sweep with Ray Tune + Optuna, ending in a leaderboard.

    python harness/tune.py                      the demo: shapes data, small profile, local Ray, ./runs
    python harness/tune.py --smoke-test         search_spaces/smoke.yaml: tiny trials through both stages
    ray job submit --working-dir . -- python harness/tune.py --sweep FILE --storage s3://bucket/prefix

This is the command: its arguments, the sweep file's validation and the storage's preflight, before Ray
starts. The sweep itself (phases, confirmation runs, the report) is harness/sweep.py. Everything lands
under <storage>/<name>/: tune/ (Tune and searcher state, for --resume), trials/, results.parquet, report/.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # `python harness/x.py`: see harness/_script_path.py
    import _script_path  # noqa: F401

from harness import REPO_ROOT, cli, storage  # noqa: E402
from harness.config import SweepConfig, load_sweep  # noqa: E402
from harness.config_fields import replaced  # noqa: E402
from harness.errors import ConfigError  # noqa: E402
from harness.mlflow_log import check_tracking  # noqa: E402
from harness.preflight import check_inputs, preflight  # noqa: E402

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


def main(argv=None) -> int:
    args = parse_args(argv)
    cli.use_storage_arguments(args)
    return cli.run(lambda: _sweep_command(args))


def _sweep_command(args) -> int:
    sweep = resolve_sweep(args)  # validated before Ray starts
    preflight(args.storage)  # before Ray and before any trial: fail fast on unusable storage
    check_tracking(sweep)  # and on an MLflow URI (sweep file or MLFLOW_TRACKING_URI) that cannot be used
    # Imported here, not at the top: the sweep machinery loads Ray Tune, Optuna and matplotlib (about 5 s), which
    # --help and a refused sweep file or storage URI need not wait for.
    from harness.sweep import print_leaderboard, run_sweep

    cli.start_ray()
    record, report = run_sweep(sweep, args.storage, resume=args.resume)
    print_leaderboard(report, sweep, record)
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
