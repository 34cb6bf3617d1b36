"""The Markdown leaderboard of a sweep (for terminals and git), and a plain HTML page made from
Markdown for the nightly leaderboard. The sweep's HTML report is page.py's template."""

from __future__ import annotations

import base64
import html
import re

from harness.config import SweepConfig
from harness.confirm import ALPHA, TEST_NAME
from harness.hyperparams import ALL_NAMES
from harness.phase import Phase, Source
from harness.report.final_scores import final_note, final_rows
from harness.report.fmt import fmt as _fmt
from harness.report.fmt import interval
from harness.report.importance import IMPORTANCE_METHOD, MIN_TRIALS_FOR_IMPORTANCE
from harness.results import params_of

SHOWN_PARAMS = (*ALL_NAMES, "stage1_parent")


def extra_columns(sweep: SweepConfig) -> tuple[str, ...]:
    """Shown beside the objective: conditioning and caption fidelity on shapes; on real data FID and IS."""
    if sweep.data.kind == "shapes":
        return tuple(m for m in ("conditioning", "fidelity") if m != sweep.objective.key)
    return tuple(m for m in ("fid", "inception_score") if m != sweep.objective.key)


def screened_note(sweep: SweepConfig, stages) -> str:
    """What a search table's budget was, for its own stages only."""
    names = {"Stage-I": 1, "Stage-II": 2}
    return "".join(f" {name} search trials train {search} of the confirmation runs' {full} epochs."
                   for name, search, full in sweep.screened_stages() if names[name] in stages)


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
             f"{epochs} epoch{'s' if epochs != 1 else ''}, the paper defaults included, and is ranked by the mean "
             f"over its runs of {sweep.objective.run_value()}. Interval: 95 % {confirmed[0].summary.method}. Against the "
             f"defaults: {TEST_NAME} at {ALPHA}.", ""]
    head = ["rank", "config", "seeds", f"mean {metric}", "95 % interval", "sd", "per seed", "vs defaults", *SHOWN_PARAMS]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, c in enumerate(confirmed, 1):
        s, p = c.summary, c.params
        name = f"{c.config_id} (paper defaults)" if c.is_default else c.config_id
        cells = [str(i), name, str(s.n) + (f" ({c.diverged} diverged)" if c.diverged else ""), _fmt(s.mean),
                 interval(s.low, s.high), _fmt(s.sd), ", ".join(_fmt(v) for v in c.values),
                 c.verdict.outcome.replace("_", " "), *(_fmt(p.get(k, "")) for k in SHOWN_PARAMS)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if min(c.summary.n for c in confirmed) < 3:
        lines += ["With 2 seeds the interval is wide (the t quantile is 12.7; with 3 seeds 4.3, with 5 seeds 2.8): "
                  "more seeds (`search.confirm.seeds`) narrow it.", ""]
    lines += [f"- Rank {i}, {c.config_id}: {c.verdict.sentence}" for i, c in enumerate(confirmed, 1)]
    return lines + [""]


def _final_section(final, confirmed) -> list[str]:
    lines = ["## Final evaluation (the papers' protocol)", "", final_note(final), "",
             "| config | runs | FID | FID per seed | KID | IS |", "|---|---|---|---|---|---|"]
    for r in final_rows(final, [c.config_id for c in confirmed]):
        kid = f"{_fmt(r['kid'])} ± {_fmt(r['kid_std'])}" if r["kid"] is not None else ""
        lines.append(f"| {r['name']} | {r['runs'] or ''} | {_fmt(r['fid'])} | {', '.join(_fmt(v) for v in r['fid_per_seed'])} "
                     f"| {kid} | {_fmt(r['inception_score'])} ± {_fmt(r['inception_score_std'])} |")
    return lines + [""]


def markdown(sweep: SweepConfig, phase: Phase, ranked, stage1_ranked, imp, cost, paper, best_grids, record,
             confirmed, stage1_confirmed, final=None, vs_random_notes: dict[str, str] | None = None,
             run_ends=()) -> str:
    objective = sweep.objective
    metric = objective.key
    extra = extra_columns(sweep)
    notes = vs_random_notes or {}
    final_epochs = phase.epochs(sweep, Source.CONFIRM)
    lines = [f"# Leaderboard: {sweep.name}", "",
             f"Strategy `{sweep.search.strategy}`, objective `{objective.describe()}` ({objective.mode}), "
             f"data `{sweep.data.kind}`, profile `{sweep.model.profile}`, sampler `{sweep.search.sampler}`, "
             f"scheduler `{sweep.search.scheduler}`, searcher seed {record.seed if record else 'n/a'}.", ""]
    if record is not None and record.tracking_stopped:
        lines += [f"**MLflow tracking stopped during the sweep** ({record.tracking_stopped}): its MLflow runs are "
                  "incomplete; this report and results.parquet are complete.", ""]
    if run_ends:  # how each Tune run's trials ended, against its plan: a shortfall in bold
        lines += [f"- {e.line() if e.complete else '**' + e.line() + '**'}" for e in run_ends] + [""]
    if confirmed:
        b = confirmed[0]
        verdict = ("The paper defaults rank first: no searched config beat them." if b.is_default
                   else b.verdict.sentence)
        lines.append(f"**Best confirmed config** {b.config_id}: mean {metric} {_fmt(b.summary.mean)} over {b.summary.n} "
                     f"seeds, 95 % interval {interval(b.summary.low, b.summary.high)}. {verdict}")
        lines += ["", *_confirmed_section("Confirmed ranking", confirmed, metric, sweep, final_epochs)]
        if stage1_confirmed:
            lines += _confirmed_section("Confirmed Stage-I ranking (the Stage-II parents come from its top)",
                                        stage1_confirmed, metric, sweep, sweep.stage1.epochs)
        lines += ["![confirmed](images/confirmed.png)", ""]
    if final is not None:
        lines += _final_section(final, confirmed)
    if not confirmed and ranked:
        lines.append("No confirmation runs (search.confirm.seeds is 0): the trials below ran one seed each, so a "
                     "difference between them may be seed noise.")
    if ranked:
        b = ranked[0]
        lines.append(f"**Best search trial** `{b['trial_id']}`: {metric} = {_fmt(b[metric])} at epoch {b['epoch']}"
                     + (f", caption fidelity {_fmt(b.get('fidelity'))}" if "fidelity" in extra else "") + ".")
    if paper is not None:
        lines.append(f"**Paper defaults** (`{paper['trial_id']}`): {metric} = {_fmt(paper[metric])} at epoch "
                     f"{paper['epoch']}" + (f", caption fidelity {_fmt(paper.get('fidelity'))}" if "fidelity" in extra
                                            else "") + ".")
    lines += ["", "## Search trials", "",
              "One training seed each, at the budget the scheduler gave them (an early-stopped trial's epoch is below "
              "the planned one), ranked by their best evaluation: for exploring the space, not for choosing a config."
              + screened_note(sweep, phase.stages),
              "", *_table(ranked, metric, extra), ""]
    if notes.get("final"):
        lines += [notes["final"], ""]
    if stage1_ranked:
        lines += ["## Stage-I search trials", "", screened_note(sweep, (1,)).strip(), "",
                  *_table(stage1_ranked, metric, extra), ""]
        if notes.get("stage1"):
            lines += [notes["stage1"], ""]
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


def _inline(text: str) -> str:
    """Markdown's inline marks as HTML: `code` and **bold**, the rest escaped."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


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
            out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells) + "</tr>")
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
            out.append(f"<p>{_inline(line)}</p>")
    if in_table:
        out.append("</table>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}th{background:#eee}img{max-width:100%}")
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(out)}</body></html>"
