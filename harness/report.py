"""Leaderboard of a sweep: Markdown and one self-contained HTML page, written next to the results.

    python -m harness.report --storage URI --sweep NAME

With confirmation runs, ranks the final phase's confirmed configs (Stage-II, or joint) by their
mean over seeds, with 95 % intervals and a sentence per config on whether it beats the paper
defaults beyond seed noise; then the search trials (one seed each), the best sample grids,
metric-per-epoch curves, parameter importances (only from enough trials) and the cost of each
trial. Works for any finished or interrupted sweep: it reads only storage.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

from harness import cli, storage  # noqa: E402
from harness.config import SweepConfig, sweep_from_dict  # noqa: E402
from harness.confirm import ALPHA, TEST_NAME, config_id, params_of, rank_confirmed  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.hyperparams import ALL_NAMES  # noqa: E402
from harness.results import collect_rows, last_evaluations, write_parquet  # noqa: E402
from harness.run_layout import SweepLayout  # noqa: E402
from harness.searcher import optuna_space  # noqa: E402

SHOWN_PARAMS = (*ALL_NAMES, "stage1_parent")


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



def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def curves_png(rows: list[dict], metric: str) -> bytes:
    stages = sorted({r["stage"] for r in rows})
    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 3.6), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        by_trial: dict[str, list] = {}
        for r in rows:
            if r["stage"] == stage and r.get(metric) is not None and r["status"] != "diverged":
                by_trial.setdefault(r["trial_id"], []).append((r["epoch"], r[metric]))
        for tid, points in sorted(by_trial.items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=tid[-8:])
        ax.set_title(f"Stage-{'I' * stage}: {metric} per epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        if by_trial:
            ax.legend(fontsize=7)
    return _png(fig)


# Importances from a handful of trials rank noise: Optuna's evaluators fit a model of the objective
# over the search space, and with 5 parameters that needs a few dozen completed trials before the
# ranking is stable (docs/RANKING.md). Below this the report says so instead of printing numbers.
MIN_TRIALS_FOR_IMPORTANCE = 30
IMPORTANCE_METHOD = "PED-ANOVA (Optuna's default evaluator)"


def importances(entries: list[dict], sweep: SweepConfig, phase: str, metric: str, mode: str,
                study_trials: list | None = None) -> tuple[dict[str, float], int]:
    """Optuna's PED-ANOVA importances and the number of completed trials they rest on.

    Computed over ``study_trials`` (a persistent study's finished trials, all nights) when given,
    else over the ranked search trials; empty below MIN_TRIALS_FOR_IMPORTANCE."""
    if phase == "joint":
        space = {**optuna_space(sweep.stage1.search, "s1."), **optuna_space(sweep.stage2.search, "s2.")}
    else:
        space = optuna_space((sweep.stage1 if phase == "stage1" else sweep.stage2).search)
    if study_trials is not None:
        trials = [t for t in study_trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
        return _importances(trials, mode), len(trials)
    trials = []
    for e in entries:
        if e["final_status"] == "diverged":
            continue
        params = {k: v for k, v in params_of(e).items() if k in space}
        try:
            params = {k: (int(v) if isinstance(space[k], optuna.distributions.IntDistribution) else v) for k, v in params.items()}
            trials.append(optuna.trial.create_trial(params=params, distributions={k: space[k] for k in params},
                                                    value=float(e[metric])))
        except ValueError:
            continue
    return _importances(trials, mode), len(trials)


def _importances(trials: list, mode: str) -> dict[str, float]:
    if len(trials) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a throw-away study, not a run to log
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    study.add_trials(trials)
    try:
        return {k: round(v, 3) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):
        return {}


def confirmed_png(confirmed: list, stage1_confirmed: list, metric: str, mode: str) -> bytes:
    """Each confirmed config's seed runs (dots) and its mean with the 95 % interval (bar)."""
    panels = [("final stage" if stage1_confirmed else "confirmed configs", confirmed)]
    if stage1_confirmed:
        panels.append(("Stage-I", stage1_confirmed))
    rows = max(len(c) for _, c in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 1.6 + 0.5 * rows), squeeze=False)
    for ax, (title, configs) in zip(axes[0], panels):
        for y, c in enumerate(configs):
            colour = "tab:grey" if c.is_default else {"better": "tab:green", "worse": "tab:red"}.get(c.verdict.outcome,
                                                                                                   "tab:blue")
            s = c.summary
            ax.errorbar([s.mean], [y], xerr=[[s.mean - s.low], [s.high - s.mean]], fmt="o", color=colour, capsize=4)
            ax.scatter(c.values, [y] * len(c.values), marker="x", color="black", s=18, zorder=3)
        ax.set_yticks(range(len(configs)), [c.config_id + (" (defaults)" if c.is_default else "") for c in configs],
                      fontsize=8)
        ax.set_xlabel(f"{metric} ({'lower' if mode == 'min' else 'higher'} is better); x: one seed, bar: 95 % interval")
        ax.set_title(title)
        ax.set_ylim(len(configs) - 0.5, -0.5)
    fig.tight_layout()
    return _png(fig)


def build_report(layout: SweepLayout, sweep: SweepConfig, summary: dict | None = None,
                 study_trials: list | None = None) -> dict:
    """Writes results.parquet and report/leaderboard.{md,html}; returns where and the rankings.

    ``study_trials``: a persistent study's trials (nightly), over which importances are computed."""
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
    images = {"curves.png": curves_png(search_rows, metric)}
    if confirmed:
        images["confirmed.png"] = confirmed_png(confirmed, stage1_confirmed, metric, sweep.search.mode)
    best_grids: list[tuple[str, dict]] = []  # (image name, ranked entry), best first
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
    for name, data in images.items():
        storage.write_bytes(layout.report_image(name), data)
    imp, imp_trials = importances(ranked, sweep, final_phase, metric, mode, study_trials)
    cost = _cost(rows)
    paper = paper_default_trial(ranked, sweep.first_point(final_phase))
    md = _markdown(sweep, ranked, stage1_ranked, (imp, imp_trials), cost, paper, metric, best_grids, summary or {},
                   confirmed, stage1_confirmed)
    storage.write_bytes(layout.report_file("leaderboard.md"), md.encode())
    storage.write_bytes(layout.report_file("leaderboard.html"), html_page(md, images).encode())
    return {"report": layout.report_file("leaderboard.html"), "rows": len(rows), "results": rows, "ranked": ranked,
            "stage1_ranked": stage1_ranked, "confirmed": confirmed, "stage1_confirmed": stage1_confirmed,
            "importances": imp, "importance_trials": imp_trials, "cost": cost}


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


def _table(entries: list[dict], metric: str, extra: tuple[str, ...]) -> list[str]:
    head = ["rank", "trial", "status", "epoch", metric, *extra, *SHOWN_PARAMS, "CPU s", "GPU s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, e in enumerate(entries, 1):
        p = params_of(e)
        flat = {k.split(".", 1)[-1]: v for k, v in p.items()}
        cost = e["trial_cost"]
        cells = [str(i), e["trial_id"], e["final_status"], str(e["epoch"]), _fmt(e.get(metric)),
                 *(_fmt(e.get(x, "")) for x in extra), *(_fmt(flat.get(k, "")) for k in SHOWN_PARAMS),
                 _fmt(cost.get("cpu_seconds", 0.0)), _fmt(cost.get("gpu_seconds", 0.0))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _confirmed_section(title: str, confirmed: list, metric: str, sweep: SweepConfig, epochs: int) -> list[str]:
    seeds = ", ".join(str(s) for s in confirmed[0].seeds)
    lines = [f"## {title}", "",
             f"Each config was trained again with the same fresh training seeds ({seeds}) at the full budget of "
             f"{epochs} epoch{'s' if epochs != 1 else ''}, the paper defaults included, and is ranked by the mean of "
             "its runs' last "
             f"evaluations. Interval: 95 % Student-t interval of the mean. Against the defaults: {TEST_NAME} "
             f"at {ALPHA}.", ""]
    head = ["rank", "config", "seeds", f"mean {metric}", "95 % interval", "sd", "per seed", "vs defaults", *SHOWN_PARAMS]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, c in enumerate(confirmed, 1):
        s, p = c.summary, c.params
        name = f"{c.config_id} (paper defaults)" if c.is_default else c.config_id
        cells = [str(i), name, str(s.n) + (f" ({c.diverged} diverged)" if c.diverged else ""), _fmt(s.mean),
                 f"[{_fmt(s.low)}, {_fmt(s.high)}]", _fmt(s.sd), ", ".join(_fmt(v) for v in c.values),
                 c.verdict.outcome.replace("_", " "), *(_fmt(p.get(k, "")) for k in SHOWN_PARAMS)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if min(c.summary.n for c in confirmed) < 3:
        lines += ["With 2 seeds the interval is wide (the t quantile is 12.7; with 3 seeds 4.3, with 5 seeds 2.8), "
                  "and can reach below zero: more seeds (`search.confirm.seeds`) narrow it.", ""]
    lines += [f"- Rank {i}, {c.config_id}: {c.verdict.sentence}" for i, c in enumerate(confirmed, 1)]
    return lines + [""]


def _markdown(sweep, ranked, stage1_ranked, imp, cost, paper, metric, best_grids, summary, confirmed,
              stage1_confirmed) -> str:
    # Beside the objective: caption fidelity on shapes; on real data FID and IS, both always shown.
    extra = ("fidelity",) if sweep.data.kind == "shapes" else tuple(m for m in ("fid", "inception_score") if m != metric)
    final_epochs = sweep.stage1.epochs if ranked and ranked[0].get("stage") == 1 else sweep.stage2.epochs
    if sweep.search.strategy == "joint":
        final_epochs = sweep.stage1.epochs + sweep.stage2.epochs
    lines = [f"# Leaderboard: {sweep.name}", "",
             f"Strategy `{sweep.search.strategy}`, objective `{metric}` ({sweep.search.mode}), "
             f"data `{sweep.data.kind}`, profile `{sweep.model.profile}`, sampler `{sweep.search.sampler}`, "
             f"scheduler `{sweep.search.scheduler}`, searcher seed {summary.get('seed', 'n/a')}.", ""]
    if confirmed:
        b = confirmed[0]
        verdict = ("The paper defaults rank first: no searched config beat them." if b.is_default
                   else b.verdict.sentence)
        lines.append(f"**Best confirmed config** {b.config_id}: mean {metric} {_fmt(b.summary.mean)} over {b.summary.n} "
                     f"seeds, 95 % interval [{_fmt(b.summary.low)}, {_fmt(b.summary.high)}]. {verdict}")
        lines += ["", *_confirmed_section("Confirmed ranking", confirmed, metric, sweep, final_epochs)]
        if stage1_confirmed:
            lines += _confirmed_section("Confirmed Stage-I ranking (the Stage-II parents come from its top)",
                                        stage1_confirmed, metric, sweep, sweep.stage1.epochs)
        lines += ["![confirmed](images/confirmed.png)", ""]
    elif ranked:
        lines.append("No confirmation runs (search.confirm.seeds is 0): the trials below ran one seed each, so a "
                     "difference between them may be seed noise.")
    if ranked:
        b = ranked[0]
        lines.append(f"**Best search trial** `{b['trial_id']}`: {metric} = {_fmt(b[metric])} at epoch {b['epoch']}"
                     + (f", caption fidelity {_fmt(b.get('fidelity'))}" if "fidelity" in b else "") + ".")
    if paper is not None:
        lines.append(f"**Paper defaults** (`{paper['trial_id']}`): {metric} = {_fmt(paper[metric])} at epoch "
                     f"{paper['epoch']}" + (f", caption fidelity {_fmt(paper.get('fidelity'))}" if "fidelity" in paper else "")
                     + ".")
    lines += ["", "## Search trials", "",
              "One training seed each, at the budget the scheduler gave them (an early-stopped trial's epoch is below "
              "the planned one), ranked by their best evaluation: for exploring the space, not for choosing a config.",
              "", *_table(ranked, metric, extra), ""]
    if stage1_ranked and ranked and ranked[0].get("stage") == 2:
        lines += ["## Stage-I search trials", "", *_table(stage1_ranked, metric, extra), ""]
    lines += ["## Best sample grids", ""]
    for rank, (name, e) in enumerate(best_grids, 1):
        lines += [f"Rank {rank}: trial `{e['trial_id']}`, epoch {e['epoch']}, {metric} = {_fmt(e[metric])}", "",
                  f"![{name}](images/{name})", ""]
    if not best_grids:
        lines.append("(no sample grids yet)")
    values, n_trials = imp
    lines += ["", "## Metric per epoch (search trials)", "", "![curves](images/curves.png)", "",
              f"## Parameter importances ({IMPORTANCE_METHOD})", ""]
    lines += [f"- `{k}`: {v}" for k, v in values.items()] or [
        f"Not computed: {n_trials} completed trials, and importances need at least {MIN_TRIALS_FOR_IMPORTANCE} "
        "before they rank more than noise."]
    lines += ["", "## Cost", "", "| phase | runs | CPU s | GPU s | wall s |", "|---|---|---|---|---|"]
    lines += [f"| {ph} | {c['runs']} | {c['cpu_seconds']} | {c['gpu_seconds']} | {c['wall_seconds']} |" for ph, c in cost.items()]
    return "\n".join(lines) + "\n"


def html_page(md: str, images: dict[str, bytes], title: str = "Leaderboard") -> str:
    """A self-contained page: the Markdown's tables and text, images inlined as data URIs."""
    out, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
                out.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>")
                continue
            out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("!["):
            name = line[line.index("(") + 1 : -1].split("/")[-1]
            data = base64.b64encode(images[name]).decode()
            out.append(f'<p><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            text = html.escape(line).replace("**", "")
            out.append(f"<p>{text}</p>")
    if in_table:
        out.append("</table>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}th{background:#eee}img{max-width:100%}")
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(out)}</body></html>"


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
