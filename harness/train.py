"""Trains the default values of a sweep file, Stage-I then Stage-II, with Ray Train. No Tune.

    python harness/train.py --sweep search_spaces/shapes.yaml [--storage ./runs] [--stage 1|2|both]
                            [--workers N] [--cpus-per-worker C] [--gpus-per-worker G]
                            [--stage1-checkpoint URI] [--name NAME]

Runs land under <storage>/<name>/train/stage{1,2}/ (checkpoints, sample grids, metrics); running
the same command again resumes from the latest complete checkpoint.
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

from harness import REPO_ROOT, cli, storage  # noqa: E402
from harness.config import load_sweep  # noqa: E402
from harness.config_fields import replaced  # noqa: E402
from harness.errors import HarnessError, NoResults  # noqa: E402
from harness.run_layout import SweepLayout  # noqa: E402

DEFAULT_SWEEP = os.path.join(REPO_ROOT, "search_spaces", "shapes.yaml")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", default=DEFAULT_SWEEP, help="sweep YAML whose default values are trained")
    parser.add_argument("--storage", default="./runs", help="local path or s3://bucket/prefix")
    storage.add_endpoint_argument(parser)
    parser.add_argument("--stage", choices=["1", "2", "both"], default="both")
    parser.add_argument("--workers", type=int, help="Ray Train workers (0: in-process local mode)")
    parser.add_argument("--cpus-per-worker", type=int, help="CPUs (and torch threads) per worker")
    parser.add_argument("--gpus-per-worker", type=float)
    parser.add_argument("--stage1-checkpoint", help="Stage-I checkpoint URI (required for --stage 2)")
    parser.add_argument("--name", help="run name (default: the sweep's name); reusing it resumes")
    parser.add_argument("--inception-weights", help="real datasets: TorchScript Inception (path or URI) for FID/IS")
    parser.add_argument("--epochs-stage1", type=int, help="override the sweep's Stage-I epochs")
    parser.add_argument("--epochs-stage2", type=int, help="override the sweep's Stage-II epochs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli.use_storage_arguments(args)
    return cli.run(lambda: _train_command(args))


def _train_command(args) -> int:
    from harness.preflight import check_inputs, preflight

    sweep = load_sweep(args.sweep)  # validated before Ray starts
    if args.inception_weights:
        sweep = dataclasses.replace(sweep, data=dataclasses.replace(sweep.data, inception_weights=args.inception_weights))
    flags = {"workers": args.workers, "gpus_per_worker": args.gpus_per_worker, "cpus_per_worker": args.cpus_per_worker}
    resources = replaced(sweep.resources, "resources", **{k: v for k, v in flags.items() if v is not None})
    if args.stage == "2" and not args.stage1_checkpoint:
        raise HarnessError("--stage1-checkpoint: required with --stage 2")
    check_inputs(sweep.data, args.stage1_checkpoint if args.stage == "2" else None)
    preflight(args.storage)

    import ray.train

    from harness.data.ensure import ensure_dataset

    name = args.name or sweep.name
    layout = SweepLayout(args.storage, name)
    dataset_uri = ensure_dataset(args.storage, sweep.data, sweep.model.profile)
    cli.start_ray()
    try:
        return _train(args, sweep, resources, layout, dataset_uri)
    except (ray.train.TrainingFailedError, HarnessError) as exc:
        # A long storage outage ends here after the retries (and Ray Train's restarts) are spent.
        cause = str(exc).strip().splitlines()[-1][:400]
        raise NoResults(f"training failed: {cause}\nrun the same command again to resume from the latest "
                        "complete checkpoint") from exc


def _train(args, sweep, resources, layout: SweepLayout, dataset_uri: str) -> int:
    from harness.checkpoint import best
    from harness.fit import fit_stage
    from harness.hyperparams import from_sampled
    from harness.stage_run import StageRunConfig

    summary: dict = {"name": layout.name, "dataset": dataset_uri}
    t0 = time.perf_counter()
    stage1_ckpt = args.stage1_checkpoint
    if args.stage in ("1", "both"):
        run = StageRunConfig.from_sweep(sweep, layout.train_run(1), dataset_uri, args.epochs_stage1 or sweep.stage1.epochs,
                                        from_sampled(1, sweep.defaults(1)))
        summary["stage1"] = fit_stage(run, resources, sweep.search.max_failures)
        stage1_ckpt = best(run.layout, sweep.objective)
        if stage1_ckpt is None:
            print(f"error: Stage-I produced no checkpoint ({summary['stage1'].get('status')})", file=sys.stderr)
            print(json.dumps(summary, indent=2, default=str))
            return cli.EXIT_NO_RESULT
    if args.stage in ("2", "both"):
        run = StageRunConfig.from_sweep(sweep, layout.train_run(2), dataset_uri, args.epochs_stage2 or sweep.stage2.epochs,
                                        from_sampled(2, sweep.defaults(2)), stage1_ckpt)
        summary["stage2"] = fit_stage(run, resources, sweep.search.max_failures)
    summary["stage1_checkpoint"] = stage1_ckpt
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
