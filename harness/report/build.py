"""Builds a sweep's report: results.parquet, the rankings, the figures and report/leaderboard.{md,html}.

With confirmation runs, ranks the final phase's confirmed configs (Stage-II, or joint) by their
mean over seeds, with 95 % intervals and a sentence per config on whether it beats the paper
defaults beyond seed noise; then the best run's generated images beside held-out real ones for the
same captions (with fidelity per attribute, and its Stage-I parent's), metric and loss curves,
quality against compute with the Pareto front, the search trials (one seed each), parameter
importances (only from enough trials) and the cost. Works for any finished or interrupted sweep: it
reads only storage. The HTML page is page.py's Jinja2 template; the figures are plots.py's.
"""

from __future__ import annotations

import dataclasses

from harness import checkpoint, storage
from harness.config import SweepConfig
from harness.confirm import ConfirmedConfig, rank_confirmed
from harness.data.shapes import ATTRIBUTES
from harness.errors import NoResults, StorageError
from harness.final_eval import FinalEvaluation
from harness.objective import Objective
from harness.phase import Phase, Source, reached_phase
from harness.report.importance import importances
from harness.report.markdown import markdown
from harness.report.page import render_html
from harness.report.plots import confirmed_png, curves_png, pareto_png
from harness.report.search_vs_random import search_vs_random, vs_random_note
from harness.results import collect_rows, config_id, last_by_run, last_evaluations, params_of, write_parquet
from harness.run_layout import SweepLayout
from harness.sweep_record import SweepRecord
from harness.trial_ends import RunEnds, sweep_run_ends


def rank_trials(rows: list[dict], stage: int, objective: Objective) -> list[dict]:
    """One entry per trial: its best evaluation at ``stage`` with its run's ``final_status`` and last evaluation
    (``trial_cost``), ranked best first; diverged trials last, trials with no value not at all."""
    stage_rows = [r for r in rows if r["stage"] == stage]
    last = {tid: r for (tid, _), r in last_by_run(stage_rows).items()}
    by_trial: dict[str, list[dict]] = {}
    for r in stage_rows:
        by_trial.setdefault(r["trial_id"], []).append(r)
    entries = []
    for tid, trial_rows in by_trial.items():
        best = objective.best(sorted(trial_rows, key=lambda r: r["epoch"]), objective.value_of)
        if best is not None:
            entries.append({**best, "final_status": last[tid]["status"], "trial_cost": last[tid]})
    return sorted(entries, key=lambda e: (e["final_status"] == "diverged", objective.sort_key(objective.value_of(e))))


def paper_default_trial(entries: list[dict], first_point: dict) -> dict | None:
    """The trial that evaluated the sweep's defaults (the paper's values): its params equal them."""
    for e in entries:
        params = params_of(e)
        if all(k in params and params[k] == v for k, v in first_point.items()):
            return e
    return None


@dataclasses.dataclass(frozen=True)
class Report:
    """What build_report wrote and ranked: read by the sweep command, the nightly leaderboard and tests."""

    uri: str  # the HTML leaderboard
    phase: Phase  # the phase it ranks (the last one the sweep reached)
    rows: list[dict]  # every evaluation of every run (results.parquet)
    ranked: list[dict]  # the phase's search trials, best first (rank_trials)
    stage1_ranked: list[dict]  # staged: the Stage-I search trials, best first
    confirmed: list[ConfirmedConfig]  # the phase's confirmed configs, best mean first
    stage1_confirmed: list[ConfirmedConfig]  # staged: Stage-I's confirmed configs
    importances: dict[str, float]
    importance_trials: int
    cost: dict[str, dict]  # per Tune run: cpu/gpu/wall seconds and runs
    final: FinalEvaluation | None = None  # real data: the papers' protocol, scored once at the end
    run_ends: tuple[RunEnds, ...] = ()  # each Tune run's trials by how they ended, against its plan


def build_report(layout: SweepLayout, sweep: SweepConfig, record: SweepRecord | None = None,
                 study_trials: list | None = None) -> Report:
    """Writes results.parquet and report/leaderboard.{md,html}; returns what it ranked.

    ``study_trials``: a persistent study's trials (nightly), over which importances are computed."""
    rows = collect_rows(layout, sweep)
    write_parquet(rows, layout.results)
    objective = sweep.objective
    final_phase = reached_phase(sweep.search.strategy, {r["phase"] for r in rows})
    if final_phase is None:
        raise NoResults(f"{layout.results}: no evaluation of a {sweep.search.strategy} phase")
    final_stage = final_phase.final_stage
    search_rows = [r for r in rows if r["source"] == Source.SEARCH]
    final_search_rows = [r for r in search_rows if r["phase"] == final_phase]
    ranked = rank_trials(final_search_rows, final_stage, objective)
    staged = final_phase is Phase.STAGE2
    stage1_search_rows = [r for r in search_rows if r["phase"] == Phase.STAGE1] if staged else []
    stage1_ranked = rank_trials(stage1_search_rows, 1, objective)
    confirmed = rank_confirmed(rows, final_phase, objective, config_id(sweep.first_point(final_phase)))
    stage1_confirmed = (rank_confirmed(rows, Phase.STAGE1, objective, config_id(sweep.first_point(Phase.STAGE1)))
                        if staged else [])
    images = {"curves.png": curves_png(rows, objective)}
    if confirmed:
        images["confirmed.png"] = confirmed_png(confirmed, stage1_confirmed, objective)
    finals = [r for r in last_evaluations(rows) if r["phase"] == final_phase and r["stage"] == final_stage
              and objective.value_of(r) is not None and r["status"] != "diverged"]
    gpu = any(float(r.get("gpu_seconds") or 0) > 0 for r in finals)
    unit = "GPU-hours" if gpu else "CPU-hours"
    points = [(float(r.get("gpu_seconds" if gpu else "cpu_seconds") or 0) / 3600, objective.value_of(r), r["source"])
              for r in finals]
    if points:
        images["pareto.png"] = pareto_png(points, objective, unit)
    best_grids: list[tuple[str, dict]] = []  # (image name, entry), best first
    shown = ranked
    if confirmed:  # the best seed run of each of the best confirmed configs, at its last evaluation
        last = last_by_run(rows)
        shown = [last[(c.best_trial, final_stage)] for c in confirmed if (c.best_trial, final_stage) in last
                 and objective.value_of(last[(c.best_trial, final_stage)]) is not None]
    for i, e in enumerate(shown[:3]):
        grid = e.get("sample_grid")
        if grid and storage.exists(grid):
            name = f"best{i + 1}_{e['trial_id'][-8:]}.png"
            images[name] = storage.read_bytes(grid)
            best_grids.append((name, e))
    parents = record.stage1_parents if record is not None else []
    showcase = _showcase(layout, best_grids[0][1], final_stage, parents) if best_grids else None
    if showcase is not None:
        images["real.png"] = showcase.pop("real_png")
    for name, data in images.items():
        storage.write_bytes(layout.report_image(name), data)
    imp, imp_trials = importances(ranked, sweep, final_phase, objective, study_trials)
    cost = _cost(rows)
    paper = paper_default_trial(ranked, sweep.first_point(final_phase))
    final = FinalEvaluation.load(layout.final_eval) if storage.exists(layout.final_eval) else None
    stage1_vs_random = search_vs_random(stage1_ranked, stage1_search_rows, objective) if staged else None
    vs_random_notes = {"final": vs_random_note(search_vs_random(ranked, final_search_rows, objective), ranked, objective),
                       "stage1": vs_random_note(stage1_vs_random, stage1_ranked, objective)}
    run_ends = tuple(sweep_run_ends(sweep, record, rows)) if record is not None else ()
    md = markdown(sweep, final_phase, ranked, stage1_ranked, (imp, imp_trials), cost, paper, best_grids, record,
                  confirmed, stage1_confirmed, final, vs_random_notes, run_ends)
    page = render_html(sweep=sweep, phase=final_phase, record=record, ranked=ranked, stage1_ranked=stage1_ranked,
                       confirmed=confirmed, stage1_confirmed=stage1_confirmed, importances=(imp, imp_trials), cost=cost,
                       paper=paper, best_grids=best_grids, showcase=showcase, images=images, unit=unit, final=final,
                       vs_random_notes=vs_random_notes, run_ends=run_ends)
    storage.write_bytes(layout.report_file("leaderboard.md"), md.encode())
    storage.write_bytes(layout.report_file("leaderboard.html"), page.encode())
    return Report(uri=layout.report_file("leaderboard.html"), phase=final_phase, rows=rows, ranked=ranked,
                  stage1_ranked=stage1_ranked, confirmed=confirmed, stage1_confirmed=stage1_confirmed,
                  importances=imp, importance_trials=imp_trials, cost=cost, final=final, run_ends=run_ends)


def _showcase(layout: SweepLayout, best: dict, final_stage: int, parents: list[str]) -> dict | None:
    """The best run's generated grid beside the held-out real images of the same captions, with its
    fidelity per attribute and, for Stage-II, its Stage-I parent's (from the parent checkpoint)."""
    run = layout.trial(best["trial_id"]).stage(final_stage)
    if not storage.exists(run.real_grid):
        return None
    attributes = [a for a in ATTRIBUTES if f"fidelity_{a}" in best]  # not fidelity_last3_mean, a windowed objective
    parent_metrics = {}
    params = params_of(best)
    if final_stage == 2 and parents and "stage1_parent" in params:
        try:
            parent = parents[min(int(params["stage1_parent"]), len(parents) - 1)]
            parent_metrics = checkpoint.read_meta(parent).metrics
        except StorageError:  # the parent was pruned or moved: the table shows the run alone
            parent_metrics = {}
    rows = [{"attribute": a, "value": best.get(f"fidelity_{a}"), "parent": parent_metrics.get(f"fidelity_{a}"),
             "chance": best.get(f"chance_fidelity_{a}")} for a in attributes]
    return {"trial_id": best["trial_id"], "epoch": best["epoch"], "rows": rows, "has_parent": bool(parent_metrics),
            "real_png": storage.read_bytes(run.real_grid)}


def _cost(rows: list[dict]) -> dict:
    """CPU and GPU seconds per phase, search and confirmation runs apart: the last evaluation of each
    run holds its cumulative cost."""
    out: dict[str, dict] = {}
    for r in last_evaluations(rows):
        c = out.setdefault(r["phase"].tune_run(r["source"]),
                           {"cpu_seconds": 0.0, "gpu_seconds": 0.0, "wall_seconds": 0.0, "runs": 0})
        for key in ("cpu_seconds", "gpu_seconds", "wall_seconds"):
            c[key] = round(c[key] + float(r.get(key) or 0.0), 2)
        c["runs"] += 1
    return out
