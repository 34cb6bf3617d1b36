"""Tonight's sweep, continuing one Optuna study across nights, then the cross-night leaderboard.

    python harness/nightly.py --sweep search_spaces/shapes.yaml --storage s3://bucket/stackgan [--budget-hours 6]

- The sweep runs under <storage>/nightly/<date>/<sweep name>/ (its own trials, results and report).
  Running the same date again resumes that night instead of starting over.
- Each phase's Optuna study persists in <storage>/nightly/optuna/<sweep name>.journal (or the
  database given by --study), so tonight's TPE starts from every trial of earlier nights; the
  paper-default point is evaluated only on the first night. The searcher seed is derived from the
  date, so nights do not replay the same start-up points.
- --budget-hours caps the night's wall clock (Tune stops trials at the budget; Stage-I gets half).
- The leaderboard under <storage>/leaderboard/ gains tonight's row (best trial, cost in CPU- and
  GPU-hours, quality per hour); a new all-time best checkpoint is promoted to leaderboard/best/.

Exit codes (harness/cli.py): 0 done; 1 the sweep produced nothing to rank; 2 bad input or unusable
storage; 3 tonight's best is worse than the all-time best beyond seed noise: their 95 % intervals over
the confirmation seeds do not overlap, and the means differ by more than --regression-margin.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

if __package__ in (None, ""):  # `python harness/x.py`: see harness/_script_path.py
    import _script_path  # noqa: F401

from harness import REPO_ROOT, cli, storage  # noqa: E402
from harness.config import SweepConfig, load_sweep  # noqa: E402
from harness.config_fields import replaced  # noqa: E402
from harness.errors import ConfigError, HarnessError  # noqa: E402
from harness.mlflow_log import check_tracking  # noqa: E402
from harness.phase import final_phase  # noqa: E402
from harness.preflight import check_inputs, check_study, preflight  # noqa: E402
from harness.run_layout import NightlyLayout  # noqa: E402
from harness.sweep_record import SweepRecord, derive_seed  # noqa: E402

DEFAULT_SWEEP = os.path.join(REPO_ROOT, "search_spaces", "shapes.yaml")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default=DEFAULT_SWEEP, help="sweep YAML (default: search_spaces/shapes.yaml)")
    p.add_argument("--storage", required=True, help="storage root: local path or s3://bucket/prefix")
    storage.add_endpoint_argument(p)
    p.add_argument("--budget-hours", type=float, help="wall-clock budget for tonight's sweep")
    p.add_argument("--date", help="the night's date, YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--regression-margin", type=float, default=0.10,
                   help="flag a regression when tonight's best is worse than the all-time best beyond seed "
                        "noise (non-overlapping 95 %% intervals) and by more than this fraction (default 0.10)")
    p.add_argument("--study", help="Optuna study home: a journal file URI or a database URL "
                                   "(default <storage>/nightly/optuna/<sweep>.journal)")
    p.add_argument("--lease-ttl", type=float, default=60.0, metavar="SECONDS",
                   help="an s3:// study journal is held by one driver at a time; a holder silent this long is taken "
                        "to be dead and its lease taken over (default 60; the holder renews every quarter of it)")
    p.add_argument("--report-only", action="store_true",
                   help="skip the sweep: rebuild the night's report and leaderboard row from storage")
    return p.parse_args(argv)


def night_date(text: str | None) -> str:
    if text is None:
        return datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    try:
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise ConfigError(f"--date: {text!r} is not a YYYY-MM-DD date") from None


def night_sweep(args, date: str) -> SweepConfig:
    """The sweep file with tonight's budget and a date-derived searcher seed."""
    if args.regression_margin < 0:
        raise ConfigError(f"--regression-margin: must be >= 0, got {args.regression_margin}")
    if args.budget_hours is not None and args.budget_hours <= 0:
        raise ConfigError(f"--budget-hours: must be > 0, got {args.budget_hours}")
    if not args.lease_ttl > 0:
        raise ConfigError(f"--lease-ttl: must be > 0 seconds, got {args.lease_ttl}")
    sweep = load_sweep(args.sweep)
    try:
        sweep.require_search_space()
        check_inputs(sweep.data)  # before Ray: a missing file would fail every trial three times
    except ConfigError as exc:
        raise ConfigError(f"{args.sweep}: {exc}") from exc
    # A fixed seed would make the continued study replay the same start-up points every night.
    seed = derive_seed(None, datetime.date.fromisoformat(date)) + (sweep.search.seed or 0)
    budget = args.budget_hours * 3600 if args.budget_hours is not None else sweep.search.time_budget_s
    return replaced(sweep, "", search=replaced(sweep.search, "search", seed=seed, time_budget_s=budget))


def main(argv=None) -> int:
    args = parse_args(argv)
    cli.use_storage_arguments(args)
    return cli.run(lambda: _night_command(args))


def _night_command(args) -> int:
    t0 = time.perf_counter()
    date = night_date(args.date)
    sweep = night_sweep(args, date)
    preflight(args.storage)
    if args.study:
        check_study(args.study)  # a database whose driver is missing or whose server is away: one line, before Ray
    check_tracking(sweep)  # an MLflow URI that cannot be used ends the night here, before Ray

    # Imported here, not at the top: the sweep, the report and the study load Ray Tune, Optuna and matplotlib
    # (about 5 s), which --help and a refused argument or sweep file need not wait for.
    from harness.leaderboard import Leaderboard
    from harness.report import build_report
    from harness.report.markdown import extra_columns
    from harness.study import StudyStore
    from harness.sweep import run_sweep

    nightly = NightlyLayout(args.storage)
    night_root, night = nightly.night_root(date), nightly.night(date, sweep.name)
    board = Leaderboard(args.storage, sweep.name, sweep.objective, extra_columns(sweep))
    study = StudyStore(args.study or nightly.study_journal(sweep.name))
    board.nights()  # refuses a root that holds another nightly sweep before any trial runs
    if args.report_only:
        record_uri = night.record
        if not storage.exists(record_uri):
            raise HarnessError(f"{record_uri}: not found (no night {date} to report)")
        record = SweepRecord.load(record_uri)
        sweep = record.sweep
        final = final_phase(sweep.search.strategy)
        report = build_report(night, sweep, record, study.trials(study.study_name(sweep.name, final)))
        outcome = board.record_night(date, report, night, _wall(record, t0), record.seed, args.regression_margin,
                                     record.budget_ended)
    else:
        # Held from before Ray until the leaderboard row is written: a second night on this journal is refused
        # here, in one line, rather than writing its copy of the study over this one's (harness/journal_lease.py).
        with study.hold(f"night {date} of {sweep.name}", args.lease_ttl):
            cli.start_ray()
            print(f"night {date}: {sweep.name} under {night_root}, study {study.location}", flush=True)
            record, report = run_sweep(sweep, night_root, resume=True, dataset_root=args.storage, study=study)
            outcome = board.record_night(date, report, night, _wall(record, t0), record.seed, args.regression_margin,
                                         record.budget_ended)
    metric = sweep.objective.key
    print(f"night {date}: best {metric} {outcome.best_value:.4g}, all-time best {outcome.all_time_best:.4g}"
          f"{' (new, promoted to leaderboard/best/)' if outcome.promoted else ''}")
    print(f"night report: {report.uri}")
    print(f"leaderboard: {outcome.leaderboard_uri}")
    if outcome.regression:
        print(f"REGRESSION: tonight's best {metric} {outcome.best_value:.4g} is worse than the all-time best "
              f"{outcome.all_time_best:.4g} beyond seed noise (the 95 % intervals do not overlap) and by more than "
              f"{args.regression_margin:.0%}", file=sys.stderr)
        return cli.EXIT_REGRESSION
    return cli.EXIT_OK

def _wall(record: SweepRecord, t0: float) -> float:
    return record.wall_seconds if record.wall_seconds is not None else time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
