"""The nightly leaderboard's pages: leaderboard.md, leaderboard.html and trend.png under <root>/leaderboard/.
harness/leaderboard.py decides what a night scores; this module only draws and writes it."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness import storage  # noqa: E402
from harness.objective import Objective  # noqa: E402
from harness.report.fmt import fmt, interval  # noqa: E402
from harness.report.markdown import html_page  # noqa: E402


def render_board(uri: str, sweep_name: str, objective: Objective, beside: tuple[str, ...], nights: list[dict],
                 trial_rows: list[dict], tonight: dict) -> None:
    trend = trend_png(objective, nights)
    storage.write_bytes(storage.join(uri, "trend.png"), trend)
    md = board_markdown(sweep_name, objective, beside, nights, trial_rows, tonight)
    storage.write_bytes(storage.join(uri, "leaderboard.md"), md.encode())
    page = html_page(md, {"trend.png": trend}, title=f"Nightly leaderboard: {sweep_name}")
    storage.write_bytes(storage.join(uri, "leaderboard.html"), page.encode())


def _night_interval(night: dict) -> str:
    return interval(night["best_ci_low"], night["best_ci_high"]) if night["best_seeds"] > 1 else "(one seed)"


def trend_png(objective: Objective, nights: list[dict]) -> bytes:
    fig, (ax, ax_cost) = plt.subplots(1, 2, figsize=(11, 3.6))
    dates = [n["date"] for n in nights]
    x = range(len(nights))
    values = [n["best_value"] for n in nights]
    ax.errorbar(x, values, yerr=[[max(0.0, n["best_value"] - n["best_ci_low"]) for n in nights],
                                 [max(0.0, n["best_ci_high"] - n["best_value"]) for n in nights]],
                marker="o", capsize=3, label="best of the night (95 % interval)")
    ax.step(x, [n["all_time_best"] for n in nights], where="post", linestyle="--", label="all-time best")
    bad = [i for i, n in enumerate(nights) if n["regression"]]
    ax.scatter(bad, [nights[i]["best_value"] for i in bad], color="red", zorder=3, s=60, label="regression")
    ax.set_title(f"{objective.key} per night ({objective.direction_words()})")
    ax_cost.bar([i - 0.2 for i in x], [n["gpu_hours"] for n in nights], width=0.4, label="GPU-hours")
    ax_cost.bar([i + 0.2 for i in x], [n["cpu_hours"] for n in nights], width=0.4, label="CPU-hours")
    ax_cost.set_title("cost per night")
    for a in (ax, ax_cost):
        a.set_xticks(list(x), dates, rotation=30, fontsize=7)
        a.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def board_markdown(sweep_name: str, objective: Objective, beside: tuple[str, ...], nights: list[dict],
                   trial_rows: list[dict], tonight: dict) -> str:
    m = objective.key
    quality = m if not objective.lower_is_better else "1/" + m
    lines = [f"# Nightly leaderboard: {sweep_name}", "",
             f"Objective `{objective.describe()}` ({objective.mode}); quality = {quality}; "
             f"regression margin {tonight['margin']:.0%}.", ""]
    if tonight["regression"]:
        lines += [f"**REGRESSION on {tonight['date']}**: best {m} {fmt(tonight['best_value'])} "
                  f"{_night_interval(tonight)} is worse than the all-time best {fmt(tonight['all_time_best'])} "
                  f"{interval(tonight['all_time_best_ci_low'], tonight['all_time_best_ci_high'])}: the 95 % "
                  f"intervals do not overlap and the means differ by more than {tonight['margin']:.0%}.", ""]
    top = next(n for n in nights if n["best_value"] == tonight["all_time_best"]) if nights else tonight
    lines += [f"**All-time best**: {m} = {fmt(top['best_value'])} {_night_interval(top)}, trial `{top['best_trial']}` "
              f"on {top['date']}; its checkpoint is promoted to leaderboard/best/.", "",
              f"A night's best is its best confirmed config: the mean {m} over its confirmation seeds, with the 95 % "
              "interval. A night is flagged as a regression only when its interval and the all-time best's do not "
              "overlap and the means differ by more than the margin.", "", "## Nights", ""]
    head = ["date", "best trial", m, "95 % interval", "seeds", "all-time best", "regression", "ended by", "trials",
            "CPU-h", "GPU-h", "quality/GPU-h", "quality/CPU-h", "report"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in reversed(nights):
        cells = [n["date"], n["best_trial"], fmt(n["best_value"]), _night_interval(n), str(n["best_seeds"]),
                 fmt(n["all_time_best"]), "yes" if n["regression"] else "", n.get("ended_by") or "", str(n["trials"]),
                 fmt(n["cpu_hours"]), fmt(n["gpu_hours"]), fmt(n["quality_per_gpu_hour"]),
                 fmt(n["quality_per_cpu_hour"]), n["report"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Trend", "", "![trend](trend.png)", "", f"## Trials of {tonight['date']}", ""]
    head = ["trial", "phase", "status", "epoch", m, *beside, "CPU-h", "GPU-h", "quality/GPU-h", "quality/CPU-h"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in trial_rows:
        cells = [t["trial_id"], t["phase"], t["status"], str(t["epoch"]), fmt(t[m]), *(fmt(t.get(b)) for b in beside),
                 fmt(t["cpu_hours"]), fmt(t["gpu_hours"]), fmt(t["quality_per_gpu_hour"]), fmt(t["quality_per_cpu_hour"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
