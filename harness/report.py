"""Leaderboard of a sweep: Markdown (terminals, git) and one self-contained HTML page, next to the results.

    python -m harness.report --storage URI --sweep NAME

With confirmation runs, ranks the final phase's confirmed configs (Stage-II, or joint) by their
mean over seeds, with 95 % intervals and a sentence per config on whether it beats the paper
defaults beyond seed noise; then the best run's generated images beside held-out real ones for the
same captions (with fidelity per attribute, and its Stage-I parent's), metric and loss curves,
quality against compute with the Pareto front, the search trials (one seed each), parameter
importances (only from enough trials) and the cost. Works for any finished or interrupted sweep: it
reads only storage. The HTML page is report_html.py's Jinja2 template; the figures are report_plots.py's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from harness import checkpoint, cli, storage
from harness.config import SweepConfig, sweep_from_dict
from harness.confirm import config_id, params_of, rank_confirmed
from harness.errors import HarnessError, StorageError
from harness.importance import importances
from harness.report_html import render_html
from harness.report_markdown import markdown
from harness.report_plots import confirmed_png, curves_png, pareto_png
from harness.results import collect_rows, last_evaluations, write_parquet
from harness.run_layout import SweepLayout


def _better(mode: str):
    return (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)


def rank_trials(rows: list[dict], stage: int, metric: str, mode: str) -> list[dict]:
    """One entry per trial: its best evaluation at ``stage`` (diverged trials last), ranked."""
    better = _better(mode)
    best: dict[str, dict] = {}
    last: dict[str, dict] = {}
    for r in rows:
        if r["stage"] != stage:
            continue
        tid = r["trial_id"]
        if tid not in last or r["epoch"] >= last[tid]["epoch"]:
            last[tid] = r
        value = r.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if tid not in best or better(value, best[tid][metric]):
            best[tid] = r
    entries = []
    for tid, r in best.items():
        entries.append({**r, "final_status": last[tid]["status"], "trial_cost": last[tid]})
    worst = float("inf") if mode == "min" else float("-inf")

    def key(e: dict) -> float:
        return e[metric] if e["final_status"] != "diverged" else worst
    entries.sort(key=key, reverse=(mode == "max"))
    return entries


def paper_default_trial(entries: list[dict], first_point: dict) -> dict | None:
    """The trial that evaluated the sweep's defaults (the paper's values): its params equal them."""
    for e in entries:
        params = params_of(e)
        if all(k in params and params[k] == v for k, v in first_point.items()):
            return e
    return None


def build_report(layout: SweepLayout, sweep: SweepConfig, summary: dict | None = None,
                 study_trials: list | None = None) -> dict:
    """Writes results.parquet and report/leaderboard.{md,html}; returns where and the rankings.

    ``study_trials``: a persistent study's trials (nightly), over which importances are computed."""
    summary = summary or {}
    rows = collect_rows(layout, sweep)
    write_parquet(rows, layout.results)
    metric, mode = sweep.search.objective, sweep.search.mode
    phases = sorted({r["phase"] for r in rows})
    final_phase = "joint" if "joint" in phases else ("stage2" if "stage2" in phases else "stage1")
    final_stage = 1 if final_phase == "stage1" else 2
    search_rows = [r for r in rows if r["source"] == "search"]
    ranked = rank_trials([r for r in search_rows if r["phase"] == final_phase], final_stage, metric, mode)
    stage1_ranked = rank_trials([r for r in search_rows if r["phase"] == "stage1"], 1, metric, mode) if "stage1" in phases else []
    confirmed = rank_confirmed(rows, final_phase, metric, mode, config_id(sweep.first_point(final_phase)))
    stage1_confirmed = (rank_confirmed(rows, "stage1", metric, mode, config_id(sweep.first_point("stage1")))
                        if final_phase == "stage2" else [])
    images = {"curves.png": curves_png(rows, metric)}
    if confirmed:
        images["confirmed.png"] = confirmed_png(confirmed, stage1_confirmed, metric, sweep.search.mode)
    finals = [r for r in last_evaluations(rows) if r["phase"] == final_phase and r["stage"] == final_stage
              and r.get(metric) is not None and r["status"] != "diverged"]
    gpu = any(float(r.get("gpu_seconds") or 0) > 0 for r in finals)
    unit = "GPU-hours" if gpu else "CPU-hours"
    points = [(float(r.get("gpu_seconds" if gpu else "cpu_seconds") or 0) / 3600, float(r[metric]), r["source"])
              for r in finals]
    if points:
        images["pareto.png"] = pareto_png(points, metric, mode, unit)
    best_grids: list[tuple[str, dict]] = []  # (image name, entry), best first
    shown = ranked
    if confirmed:  # the best seed run of each of the best confirmed configs, at its last evaluation
        last = {(r["trial_id"], r["stage"]): r for r in sorted(rows, key=lambda r: r["epoch"])}
        shown = [{**last[(c.best_trial, final_stage)], metric: last[(c.best_trial, final_stage)].get(metric)}
                 for c in confirmed if (c.best_trial, final_stage) in last]
    for i, e in enumerate(shown[:3]):
        grid = e.get("sample_grid")
        if grid and storage.exists(grid):
            name = f"best{i + 1}_{e['trial_id'][-8:]}.png"
            images[name] = storage.read_bytes(grid)
            best_grids.append((name, e))
    showcase = _showcase(layout, best_grids[0][1], final_stage, summary) if best_grids else None
    if showcase is not None:
        images["real.png"] = showcase.pop("real_png")
    for name, data in images.items():
        storage.write_bytes(layout.report_image(name), data)
    imp, imp_trials = importances(ranked, sweep, final_phase, metric, mode, study_trials)
    cost = _cost(rows)
    paper = paper_default_trial(ranked, sweep.first_point(final_phase))
    md = markdown(sweep, ranked, stage1_ranked, (imp, imp_trials), cost, paper, metric, best_grids, summary,
                  confirmed, stage1_confirmed)
    page = render_html(sweep=sweep, summary=summary, ranked=ranked, stage1_ranked=stage1_ranked, confirmed=confirmed,
                       stage1_confirmed=stage1_confirmed, importances=(imp, imp_trials), cost=cost, paper=paper,
                       best_grids=best_grids, showcase=showcase, images=images, unit=unit)
    storage.write_bytes(layout.report_file("leaderboard.md"), md.encode())
    storage.write_bytes(layout.report_file("leaderboard.html"), page.encode())
    return {"report": layout.report_file("leaderboard.html"), "rows": len(rows), "results": rows, "ranked": ranked,
            "stage1_ranked": stage1_ranked, "confirmed": confirmed, "stage1_confirmed": stage1_confirmed,
            "importances": imp, "importance_trials": imp_trials, "cost": cost}


def _showcase(layout: SweepLayout, best: dict, final_stage: int, summary: dict) -> dict | None:
    """The best run's generated grid beside the held-out real images of the same captions, with its
    fidelity per attribute and, for Stage-II, its Stage-I parent's (from the parent checkpoint)."""
    run = layout.trial(best["trial_id"]).stage(final_stage)
    if not storage.exists(run.real_grid):
        return None
    attributes = sorted(k.removeprefix("fidelity_") for k in best if k.startswith("fidelity_"))
    parent_metrics = {}
    parents = summary.get("stage1_parents") or []
    params = params_of(best)
    if final_stage == 2 and parents and "stage1_parent" in params:
        try:
            parent = parents[min(int(params["stage1_parent"]), len(parents) - 1)]
            parent_metrics = checkpoint.read_meta(parent)["metrics"]
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
        c = out.setdefault(r["phase"] + ("-confirm" if r["source"] == "confirm" else ""),
                           {"cpu_seconds": 0.0, "gpu_seconds": 0.0, "wall_seconds": 0.0, "runs": 0})
        for key in ("cpu_seconds", "gpu_seconds", "wall_seconds"):
            c[key] = round(c[key] + float(r.get(key) or 0.0), 2)
        c["runs"] += 1
    return out










def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", required=True, help="the sweep's storage root (local path or s3://...)")
    storage.add_endpoint_argument(parser)
    parser.add_argument("--sweep", required=True, help="the sweep's name")
    args = parser.parse_args(argv)
    cli.use_storage_arguments(args)
    return cli.run(lambda: _report_command(args))


def _report_command(args) -> int:
    layout = SweepLayout(args.storage, args.sweep)
    sweep_uri = layout.record
    if not storage.exists(sweep_uri):
        raise HarnessError(f"{sweep_uri}: not found (no sweep named {args.sweep!r} under {args.storage})")
    recorded = json.loads(storage.read_bytes(sweep_uri))
    out = build_report(layout, sweep_from_dict(recorded["sweep"]), recorded)
    best = out["ranked"][0]["trial_id"] if out["ranked"] else None
    print(json.dumps({"report": out["report"], "rows": out["rows"], "best": best}))
    return cli.EXIT_OK

if __name__ == "__main__":
    sys.exit(main())
