"""The report's figures (matplotlib, PNG bytes): metric and loss curves per trial, confirmed
configs with their intervals, and quality against compute with the Pareto front marked."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from harness.objective import Objective  # noqa: E402
from harness.phase import Source  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def curves_png(rows: list[dict], objective: Objective) -> bytes:
    """Per stage: the metric per epoch of every run (top), its discriminator and generator losses
    (bottom: D solid, G dashed), one colour per run."""
    metric = objective.key
    stages = sorted({r["stage"] for r in rows})
    fig, axes = plt.subplots(2, len(stages), figsize=(5.5 * len(stages), 6.4), squeeze=False)
    for col, stage in enumerate(stages):
        runs: dict[str, list] = {}
        for r in rows:
            if r["stage"] == stage and r["status"] != "diverged":
                runs.setdefault(r["trial_id"], []).append(r)
        top, bottom = axes[0][col], axes[1][col]
        for i, (tid, points) in enumerate(sorted(runs.items())):
            points.sort(key=lambda r: r["epoch"])
            colour = f"C{i % 10}"
            epochs = [p["epoch"] for p in points]
            if any(p.get(metric) is not None for p in points):
                top.plot(epochs, [p.get(metric) for p in points], marker="o", color=colour, label=tid)
            for key, style in (("d_loss", "-"), ("g_loss", "--")):
                if any(p.get(key) is not None for p in points):
                    bottom.plot(epochs, [p.get(key) for p in points], style, marker=".", color=colour)
        top.set_title(f"Stage-{'I' * stage}: {metric} per epoch")
        top.set_ylabel(metric)
        bottom.set_title(f"Stage-{'I' * stage}: D loss (solid), G loss (dashed)")
        bottom.set_xlabel("epoch")
        bottom.set_ylabel("loss (epoch mean)")
        evaluated = sorted({r["epoch"] for points in runs.values() for r in points})
        for ax in (top, bottom):  # epochs are whole: a one-epoch stage gets the tick "1", not 0.96 ... 1.04
            if 0 < len(evaluated) <= 12:
                ax.set_xticks(evaluated)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if runs:
            top.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def pareto_front(points: list[tuple[float, float]], objective: Objective) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and the objective, by cost."""
    front, best = [], float("inf")
    for cost, value in sorted(points, key=lambda p: (p[0], objective.sort_key(p[1]))):
        if objective.sort_key(value) < best:
            front.append((cost, value))
            best = objective.sort_key(value)
    return front


def pareto_png(points: list[tuple[float, float, Source]], objective: Objective, unit: str) -> bytes:
    """Each run's final evaluation against the compute it used; the Pareto front joined and ringed."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for source, marker in ((Source.SEARCH, "o"), (Source.CONFIRM, "s")):
        mine = [(c, v) for c, v, s in points if s == source]
        if mine:
            ax.scatter([c for c, _ in mine], [v for _, v in mine], marker=marker, alpha=0.7,
                       label="search trial" if source is Source.SEARCH else "confirmation run")
    front = pareto_front([(c, v) for c, v, _ in points], objective)
    if front:
        ax.plot([c for c, _ in front], [v for _, v in front], "-", color="black", lw=1)
        ax.scatter([c for c, _ in front], [v for _, v in front], s=140, facecolors="none", edgecolors="black",
                   label="Pareto front")
    ax.set_xlabel(f"{unit} per run")
    ax.set_ylabel(f"{objective.key} ({objective.direction_words()})")
    ax.set_title(f"Quality against {unit}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def confirmed_png(confirmed: list, stage1_confirmed: list, objective: Objective) -> bytes:
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
        ax.set_xlabel(f"{objective.key} ({objective.direction_words()}); x: one seed, bar: 95 % interval")
        ax.set_title(title)
        ax.set_ylim(len(configs) - 0.5, -0.5)
    fig.tight_layout()
    return _png(fig)
