"""Running a sweep: each phase's search and confirmation runs as Tune runs, the Stage-II parents, the report.

harness/tune.py is the command (arguments, validation, Ray's start); nightly.py runs a sweep per night.
Both import this module only once the input is known to be good: it imports Ray Tune, Optuna and
matplotlib, seconds a refused sweep file need not wait for.

Strategies: ``staged`` (a Stage-I sweep, then a Stage-II sweep starting from the top Stage-I
checkpoints) or ``joint`` (each trial trains both stages with its own values). The searcher is
Optuna's (multivariate TPE by default), seeded, with the sweep's defaults (the paper's values) as the
first point; a Tune scheduler may stop weak trials early. Everything lands under <storage>/<name>/:
tune/ (Tune and searcher state, for --resume), trials/, results.parquet and report/.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import optuna
import ray
import torch
from ray import tune
from ray.tune.stopper import CombinedStopper, TimeoutStopper

from harness import ray_compat, storage
from harness.capacity import check_cluster_fits, cluster_capacity
from harness.checkpoint import best, latest
from harness.config import SweepConfig
from harness.confirm import confirmation_candidates, confirmation_seeds, rank_confirmed
from harness.data.ensure import ensure_dataset
from harness.errors import NoResults
from harness.final_eval import FinalRun, evaluate_runs
from harness.mlflow_log import open_sweep_run
from harness.optuna_space import optuna_space
from harness.phase import Phase, Source, phases
from harness.report import Report, build_report, rank_trials
from harness.report.markdown import extra_columns
from harness.results import collect_rows, config_id, params_of
from harness.run_layout import SweepLayout
from harness.searcher import make_scheduler, make_searcher, max_concurrent_trials, trial_resources
from harness.study import StudyStore
from harness.sweep_record import SweepRecord
from harness.trial import PhaseContext, stage_trial
from harness.trial_ends import TuneRunOutcome, tune_run_ends
from models.config import get_profile

# A finished trial's process runs the next trial of its Tune run: a new trial process spends seconds importing
# torch, Ray Tune and the harness before it trains (about 4 s of each short demo trial).
REUSE_ACTORS = True
# Shares of what is left of a sweep's time budget: a phase's search leaves the rest of its share to its
# confirmation runs, and Stage-I leaves Stage-II half of what is left.
SEARCH_SHARE_WHEN_CONFIRMING = 0.6
STAGE1_SHARE = 0.5


class SweepFailed(NoResults):
    """The sweep ran but produced nothing to rank (every trial diverged or none reported): exit 1."""


class TimeBudget(TimeoutStopper):
    """Ray's own time-budget stopper (what ``TuneConfig.time_budget_s`` builds), which also leaves a marker file
    when it stops the run: Tune pickles its stoppers with a run, so a restored run's copy marks it too, and
    the sweep learns "the time budget ended it" from Tune's own decision rather than from the clock."""

    def __init__(self, seconds: float, marker_uri: str) -> None:
        super().__init__(seconds)
        self.marker_uri = marker_uri

    def stop_all(self) -> bool:
        stop = super().stop_all()
        if stop and not storage.exists(self.marker_uri):
            storage.write_bytes(self.marker_uri, b"stopped by the time budget\n")
        return stop


def _stopper(stop, budget: TimeBudget | None):
    stoppers = [s for s in (stop, budget) if s is not None]
    return CombinedStopper(*stoppers) if len(stoppers) > 1 else (stoppers[0] if stoppers else None)


def _fit(name: str, ctx: PhaseContext, sweep: SweepConfig, resume: bool, make_tuner, callbacks=()):
    """Runs (or, with ``resume``, restores) the Tune run ``name`` under <sweep>/tune/ and returns its ResultGrid.
    ``make_tuner(trainable, tune_root)`` builds a new Tuner when there is nothing to restore; a restored one runs
    with ``callbacks``, this sweep's, not those pickled with it."""
    tune_root = ctx.layout.tune_dir
    tune_path = ctx.layout.tune_run(name)  # the storage root is already absolute (main normalises it)
    trainable = tune.with_parameters(tune.with_resources(stage_trial, trial_resources(sweep.resources)), ctx=ctx)
    if resume and tune.Tuner.can_restore(tune_path) and not ray_compat.has_saved_trials(tune_path):
        print(f"{name}: its driver died before Tune saved any trial; starting it afresh", flush=True)
    elif resume and tune.Tuner.can_restore(tune_path):
        print(f"resuming {name} from {tune_path}", flush=True)
        ray_compat.reconcile_search_on_restore()
        tuner = tune.Tuner.restore(tune_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        ray_compat.use_callbacks_on_restore(tuner, list(callbacks))
        return tuner.fit()
    marker = _budget_marker(ctx, name)
    if storage.exists(marker):  # left by an earlier sweep of this name, run again afresh
        storage.delete(marker)
    return make_tuner(trainable, tune_root).fit()


def _concurrency(sweep: SweepConfig, runs: int) -> int:
    return sweep.search.max_concurrent or max_concurrent_trials(sweep.resources, cluster_capacity(), runs)


def _budget_marker(ctx: PhaseContext, name: str) -> str:
    return storage.join(ctx.layout.tune_run(name), "TIME_BUDGET_REACHED")


def run_phase(phase: Phase, ctx: PhaseContext, space: dict, start_points: list[dict], sweep: SweepConfig, seed: int,
              max_epochs: int, resume: bool, budget_s: float | None, study: StudyStore | None = None, stop=None,
              callbacks=(), wrap_searcher=None):
    """The search of one phase: Optuna's sampler proposes, the scheduler stops weak trials early.

    ``study`` makes the Optuna study persistent: it continues the phase's study from earlier runs and
    evaluates the start points (the paper defaults first) only when that study is still empty.
    ``stop`` (a Tune Stopper, e.g. a budget of trial-epochs) and ``callbacks`` (the MLflow logger) go to
    the Tune run as they are. ``wrap_searcher`` (searcher -> searcher) lets a benchmark restrict what is
    trained (benchmarks/search_efficiency.py --over trains only a recorded grid's configs)."""
    search, objective = sweep.search, sweep.objective
    name = phase.tune_run(Source.SEARCH)

    def make_tuner(trainable, tune_root):
        first = start_points
        persistent = {}
        if study is not None:
            study_name = study.study_name(sweep.name, phase)
            persistent = {"study_name": study_name, "storage": study.storage()}
            if study.count_trials(study_name) > 0:
                first = []  # evaluated on an earlier night already
        searcher = make_searcher(space, first, objective, seed, final_stage=phase.final_stage, sampler=search.sampler,
                                 startup_trials=search.startup_trials, **persistent)
        if wrap_searcher is not None:
            searcher = wrap_searcher(searcher)
        budget = TimeBudget(budget_s, _budget_marker(ctx, name)) if budget_s is not None else None
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=make_scheduler(search.scheduler, max_epochs, search.grace_period, search.reduction_factor),
                metric=objective.key, mode=objective.mode, num_samples=search.num_samples,
                max_concurrent_trials=_concurrency(sweep, search.num_samples), reuse_actors=REUSE_ACTORS,
            ),
            run_config=tune.RunConfig(name=name, storage_path=tune_root, stop=_stopper(stop, budget),
                                      callbacks=list(callbacks),
                                      failure_config=tune.FailureConfig(max_failures=search.max_failures)),
        )

    return _fit(name, ctx, sweep, resume, make_tuner, callbacks)


def confirm_phase(phase: Phase, ctx: PhaseContext, sweep: SweepConfig, resume: bool, budget_s: float | None,
                  callbacks=()):
    """Confirmation runs of one phase as Tune trials: every candidate (``ctx.candidates``) x every fresh
    training seed, at the full budget (no scheduler), as many at once as the cluster fits. Tune makes
    them fault tolerant and resumable like the search; their rows say ``source: confirm``."""
    seeds = confirmation_seeds(sweep.train.seed, sweep.search.confirm.seeds)
    runs = len(ctx.candidates) * len(seeds)
    name = phase.tune_run(Source.CONFIRM)
    print(f"{phase}: confirming {len(ctx.candidates)} configs (the paper defaults and the top "
          f"{len(ctx.candidates) - 1}) with training seeds {seeds}: {runs} runs at the full budget", flush=True)

    def make_tuner(trainable, tune_root):
        budget = TimeBudget(budget_s, _budget_marker(ctx, name)) if budget_s is not None else None
        return tune.Tuner(
            trainable,
            param_space={"candidate": tune.grid_search(list(range(len(ctx.candidates)))),
                         "train_seed": tune.grid_search(seeds)},
            tune_config=tune.TuneConfig(metric=sweep.objective.key, mode=sweep.objective.mode, num_samples=1,
                                        max_concurrent_trials=_concurrency(sweep, runs), reuse_actors=REUSE_ACTORS),
            run_config=tune.RunConfig(name=name, storage_path=tune_root, stop=_stopper(None, budget),
                                      callbacks=list(callbacks),
                                      failure_config=tune.FailureConfig(max_failures=sweep.search.max_failures)),
        )

    return _fit(name, ctx, sweep, resume, make_tuner, callbacks)


@dataclasses.dataclass
class _Sweep:
    """One sweep while it runs: its settings, where it lives, its record and its clock. run_sweep's steps."""

    sweep: SweepConfig
    layout: SweepLayout
    record: SweepRecord
    study: StudyStore
    resume: bool
    dataset_uri: str
    mlflow_run: object | None
    t0: float  # when the sweep started (time.perf_counter)

    def save(self) -> None:
        self.record.save(self.layout.record)

    def callbacks(self, name: str) -> list:
        return self.mlflow_run.callbacks(name) if self.mlflow_run is not None else []

    def budget_left(self, share: float = 1.0) -> float | None:
        """Seconds for the next Tune run: ``share`` of what is left of the sweep's time budget."""
        budget = self.sweep.search.time_budget_s
        return None if budget is None else max(1.0, share * (budget - (time.perf_counter() - self.t0)))

    def context(self, phase: Phase, **extra) -> PhaseContext:
        return PhaseContext(sweep=self.sweep, layout=self.layout, dataset_uri=self.dataset_uri, phase=phase, **extra)

    def tune_run(self, ctx: PhaseContext, name: str, fit) -> None:
        """Runs one Tune run; when Tune's time budget stopped it, records its name in ``budget_ended`` (the
        leaderboard says so). A search phase's trials still RUNNING in its study once its Tune run is over were
        stopped: by the time budget, or with a driver that died before Tune saved them (the restored run trained
        a replacement). The study is told they were pruned. Then it says how the run's trials ended against
        what it planned (trial_ends.py), and keeps what Tune knew for the report."""
        self.record.tune_outcomes[name] = TuneRunOutcome.of(fit())
        if storage.exists(_budget_marker(ctx, name)) and name not in self.record.budget_ended:
            self.record.budget_ended.append(name)
        self.save()
        if name == ctx.phase.tune_run(Source.SEARCH):
            self.study.prune_unfinished(self.study.study_name(self.sweep.name, ctx.phase))
        source = Source.SEARCH if name == ctx.phase.tune_run(Source.SEARCH) else Source.CONFIRM
        ends = tune_run_ends(self.sweep, self.record, collect_rows(self.layout, self.sweep), ctx.phase, source)
        if ends.complete:
            print(ends.line(), flush=True)
        else:
            print(f"warning: {ends.line()}", file=sys.stderr, flush=True)

    def search(self, ctx: PhaseContext, space: dict, seed: int, share: float) -> None:
        phase, sweep = ctx.phase, self.sweep
        budget = self.budget_left(share * (SEARCH_SHARE_WHEN_CONFIRMING if sweep.search.confirm.enabled else 1.0))
        self.tune_run(ctx, phase.tune_run(Source.SEARCH), lambda: run_phase(
            phase, ctx, space, sweep.start_points(phase), sweep, seed, phase.epochs(sweep, Source.SEARCH), self.resume,
            budget, self.study, callbacks=self.callbacks(phase.tune_run(Source.SEARCH))))

    def confirm(self, ctx: PhaseContext, share: float) -> None:
        phase, sweep = ctx.phase, self.sweep
        if phase not in self.record.confirm_candidates:  # recorded, so a resumed sweep confirms the same configs
            self.record.confirm_candidates[phase] = confirmation_candidates(
                search_ranking(self.layout, sweep, phase), sweep.first_point(phase), sweep.search.confirm.top_k)
            self.save()
        budget = self.budget_left(share)
        name = phase.tune_run(Source.CONFIRM)
        confirming = dataclasses.replace(ctx, candidates=tuple(self.record.confirm_candidates[phase]))
        self.tune_run(confirming, name, lambda: confirm_phase(phase, confirming, sweep, self.resume, budget,
                                                              self.callbacks(name)))

    def phase(self, ctx: PhaseContext, space: dict, seed: int, share: float) -> None:
        """A phase's search, then its confirmation runs (when on)."""
        self.search(ctx, space, seed, share)
        if self.sweep.search.confirm.enabled:
            self.confirm(ctx, share)


def stage2_space(sweep: SweepConfig) -> dict:
    """Stage-II's search space: its parameters, and which of the top Stage-I checkpoints a trial refines.
    Always ``parents`` choices, even when fewer Stage-I trials survived: a persistent study refuses a
    parameter whose distribution changes between sweeps. trial.py maps a missing rank to the last."""
    parents = optuna.distributions.CategoricalDistribution(list(range(sweep.search.stage2_parents)))
    return {**optuna_space(sweep.stage2.search), "stage1_parent": parents}


def run_sweep(sweep: SweepConfig, storage_root: str, *, resume: bool = False, dataset_root: str | None = None,
              study: StudyStore | None = None) -> tuple[SweepRecord, Report]:
    """Runs every phase of ``sweep`` under <storage_root>/<sweep.name>/ and writes its report.

    Ray must be started. Raises HarnessError for unusable input and SweepFailed when no trial produced
    anything to rank. ``dataset_root`` (default: storage_root) is where the dataset is built and reused.
    ``study`` makes the Optuna studies persistent across sweeps; without it they live in the sweep's own
    journal (optuna-dashboard reads it), started afresh unless ``resume``.
    """
    t0 = time.perf_counter()  # the time budget counts the dataset build and the wait for the cluster too
    check_cluster_fits(sweep.resources)
    layout = SweepLayout(storage_root, sweep.name)
    persistent = study is not None
    if persistent:  # the caller holds its lease (harness/nightly.py)
        return _run_sweep(sweep, layout, study, True, resume, dataset_root or storage_root, t0)
    study = StudyStore(layout.study_journal)
    with study.hold(f"sweep {sweep.name}"):  # an s3:// journal: one driver at a time (harness/journal_lease.py)
        if not resume:
            study.reset(sweep.name)
        return _run_sweep(sweep, layout, study, False, resume, dataset_root or storage_root, t0)


def _run_sweep(sweep: SweepConfig, layout: SweepLayout, study: StudyStore, persistent: bool, resume: bool,
               dataset_root: str, t0: float) -> tuple[SweepRecord, Report]:
    if resume and storage.exists(layout.record):
        record = SweepRecord.load(layout.record)
    else:
        record = SweepRecord.new(sweep)
    run = _Sweep(sweep, layout, record, study, resume, ensure_dataset(dataset_root, sweep.data,
                 sweep.model.profile), open_sweep_run(sweep, layout), t0)  # MLflow: None unless a tracking URI is set
    run.save()

    if sweep.search.strategy == "staged":
        run.phase(run.context(Phase.STAGE1), optuna_space(sweep.stage1.search), record.seed, STAGE1_SHARE)
        if not record.stage1_parents:  # chosen once and recorded: a resumed Stage-II maps its indices to the same
            record.stage1_parents = top_stage1_checkpoints(layout, sweep)
            if not record.stage1_parents:
                raise SweepFailed("no Stage-I trial produced a checkpoint (all diverged?)")
            run.save()
        run.phase(run.context(Phase.STAGE2, stage1_parents=tuple(record.stage1_parents)), stage2_space(sweep),
                  record.seed + 1, 1.0)
    else:
        space = {**optuna_space(sweep.stage1.search, "s1."), **optuna_space(sweep.stage2.search, "s2.")}
        run.phase(run.context(Phase.JOINT), space, record.seed, 1.0)
    if sweep.data.final_eval_on:
        final_evaluation(run)
    record.wall_seconds = round(time.perf_counter() - run.t0, 1)
    if run.mlflow_run is not None and run.mlflow_run.stopped is not None:
        record.tracking_stopped = run.mlflow_run.stopped
    run.save()
    final = phases(sweep.search.strategy)[-1]
    # A persistent study holds every night's trials: importances rest on all of them.
    study_trials = study.trials(study.study_name(sweep.name, final)) if persistent else None
    try:
        report = build_report(layout, sweep, record, study_trials)
    except NoResults as exc:
        if run.mlflow_run is not None:
            run.mlflow_run.finish("FAILED")
        raise SweepFailed(str(exc)) from exc
    if run.mlflow_run is not None:
        run.mlflow_run.finish()
    return record, report


def final_runs(layout: SweepLayout, sweep: SweepConfig) -> list[FinalRun]:
    """The final stage's runs the final evaluation scores: every seed run of every confirmed config, or, with
    confirmation off, the best search trial."""
    phase = phases(sweep.search.strategy)[-1]
    rows = [r for r in collect_rows(layout, sweep) if r["phase"] == phase]
    chosen: list[tuple[str, str, int]] = []
    if sweep.search.confirm.enabled:
        for c in rank_confirmed(rows, phase, sweep.objective, config_id(sweep.first_point(phase))):
            chosen += [(tid, c.config_id, seed) for tid, seed in zip(c.trial_ids, c.seeds)]
    else:
        ranked = [e for e in search_ranking(layout, sweep, phase) if e["final_status"] == "finished"][:1]
        chosen += [(e["trial_id"], e["config_id"], int(e["train_seed"])) for e in ranked]
    runs = []
    for trial_id, cid, seed in chosen:
        ckpt = latest(layout.trial(trial_id).stage(phase.final_stage))
        if ckpt is not None:
            runs.append(FinalRun(trial_id, cid, seed, ckpt))
    return runs


def _final_eval_task(runs: list[FinalRun], sweep: SweepConfig, dataset_uri: str, device: str, threads: int):
    torch.set_num_threads(threads)
    return evaluate_runs(runs, sweep, dataset_uri, get_profile(sweep.model.profile).stage2.image_size, device)


def final_evaluation(run: _Sweep) -> None:
    """The papers' protocol on the final stage's confirmed runs, once, as one Ray task (a GPU when the trials
    train on GPUs); final_eval.json, which the report reads. A resumed sweep keeps a finished one."""
    layout, sweep = run.layout, run.sweep
    if run.resume and storage.exists(layout.final_eval):
        return
    runs = final_runs(layout, sweep)
    if not runs:
        return
    res = sweep.resources
    gpus = 1 if res.gpus_per_worker else 0
    task = ray.remote(num_cpus=res.cpus_per_worker, num_gpus=gpus)(_final_eval_task)
    print(f"final evaluation: {len(runs)} run(s), {sweep.data.final_eval_samples or 'every test caption'} samples each")
    result = ray.get(task.remote(runs, sweep, run.dataset_uri, "cuda" if gpus else "cpu", res.cpus_per_worker))
    storage.write_bytes(layout.final_eval, result.to_json())


def search_ranking(layout: SweepLayout, sweep: SweepConfig, phase: Phase) -> list[dict]:
    """The search trials of ``phase``, best first (one seed each, at the budget the scheduler gave them)."""
    rows = [r for r in collect_rows(layout, sweep) if r["phase"] == phase and r["source"] == Source.SEARCH]
    return rank_trials(rows, phase.final_stage, sweep.objective)


def top_stage1_checkpoints(layout: SweepLayout, sweep: SweepConfig) -> list[str]:
    """The best checkpoints of the Stage-I configs that Stage-II starts from, best first: by confirmed mean
    over seeds when confirmation runs are on (each config's best seed run), then by the search's ranking."""
    objective = sweep.objective
    rows = [r for r in collect_rows(layout, sweep) if r["phase"] == Phase.STAGE1]
    ordered: list[tuple[str, str]] = []  # (config id, trial id) in rank order
    if sweep.search.confirm.enabled:
        confirmed = rank_confirmed(rows, Phase.STAGE1, objective, config_id(sweep.first_point(Phase.STAGE1)))
        ordered += [(c.config_id, c.best_trial) for c in confirmed if c.diverged < len(c.values)]
    searched = rank_trials([r for r in rows if r["source"] == Source.SEARCH], 1, objective)
    ordered += [(e["config_id"], e["trial_id"]) for e in searched if e["final_status"] != "diverged"]
    parents, seen = [], set()
    for cid, trial_id in ordered:
        if cid in seen:
            continue
        ckpt = best(layout.trial(trial_id).stage(1), objective)
        if ckpt:
            seen.add(cid)
            parents.append(ckpt)
        if len(parents) == sweep.search.stage2_parents:
            break
    return parents


def print_leaderboard(report: Report, sweep: SweepConfig, record: SweepRecord) -> None:
    objective = sweep.objective
    key = objective.key
    print(f"\n=== Leaderboard: {sweep.name} ({sweep.search.strategy}, {objective.describe()}, {objective.mode}) ===")
    if report.confirmed:
        print(f"confirmed configs, ranked by mean {key} over seeds (95 % interval):")
        for i, c in enumerate(report.confirmed, 1):
            s = c.summary
            print(f"{i:2d}. {c.config_id}{' (paper defaults)' if c.is_default else ''}  {key}={s.mean:.4g} "
                  f"[{s.low:.4g}, {s.high:.4g}] over {s.n} seeds  {_shown_params(c.params)}")
            print(f"    {c.verdict.sentence}")
        print("search trials (one seed each):")
    for i, e in enumerate(report.ranked, 1):
        beside = "".join(f" {m}={e[m]:.4g}" for m in extra_columns(sweep) if isinstance(e.get(m), (int, float)))
        print(f"{i:2d}. {e['trial_id']}  {key}={e[key]:.4g}{beside}  [{e['final_status']}, epoch {e['epoch']}]  "
              f"{_shown_params(params_of(e))}")
    print(f"cost: {json.dumps(report.cost)}")
    print(f"wall time: {record.wall_seconds} s")
    print(f"report: {report.uri}")


def _shown_params(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))
