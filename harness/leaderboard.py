"""The cross-night leaderboard of a nightly sweep, under <root>/leaderboard/.

    nights.parquet   one row per night: its best trial and value, the all-time best after it,
                     cost (CPU-/GPU-hours), quality per hour, the regression flag, its report
    trials.parquet   one row per trial per night, with its own cost and quality per hour
    leaderboard.md / leaderboard.html   both tables, the trend plot, a regression banner
    trend.png        best value per night and the all-time best
    best/            the all-time best checkpoint (stage2/ and the stage1/ it refines), best.json

Quality is the objective for objectives to maximise (caption fidelity, Inception Score) and
1 / objective for FID, so "quality per GPU-hour" is larger when better for every objective.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness import checkpoint, storage  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.report_markdown import html_page  # noqa: E402
from harness.results import last_evaluations, read_parquet, write_parquet  # noqa: E402
from harness.run_layout import NightlyLayout, SweepLayout  # noqa: E402


def quality(value: float | None, mode: str) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    if mode == "max":
        return value
    return 1.0 / value if value > 0 else None


def per_hour(q: float | None, hours: float) -> float | None:
    return None if q is None or hours <= 0 else q / hours


@dataclasses.dataclass(frozen=True)
class NightBest:
    """A night's best config: the mean over its confirmation seeds and the 95 % interval (a point when
    the night ran no confirmation runs: low == high == value, n == 1)."""

    value: float
    low: float
    high: float
    n: int

    @classmethod
    def of_row(cls, night: dict) -> NightBest:
        # Nights recorded before confirmation runs existed carry no interval: a point.
        low, high = night.get("best_ci_low"), night.get("best_ci_high")
        value = night["best_value"]
        return cls(value, value if low is None else low, value if high is None else high, night.get("best_seeds") or 1)


def is_regression(tonight: NightBest, all_time_before: NightBest | None, mode: str, margin: float) -> bool:
    """Tonight is clearly worse than the best of all earlier nights: the two 95 % intervals do not
    overlap, and tonight's mean is worse by more than ``margin`` (relative). Overlapping intervals
    are seed noise, not a regression, however far apart the means."""
    if all_time_before is None:
        return False
    if tonight.low <= all_time_before.high and all_time_before.low <= tonight.high:
        return False
    if mode == "min":
        return tonight.value > all_time_before.value * (1 + margin)
    return tonight.value < all_time_before.value * (1 - margin)


def tonights_best(report: dict, metric: str) -> tuple[NightBest, str, int]:
    """(tonight's best, the trial whose checkpoint represents it, its stage): the best confirmed config
    by mean when the sweep ran confirmation runs, else the best search trial as a point."""
    best = report["ranked"][0]  # rank_trials puts diverged trials last
    if report["confirmed"]:
        c = report["confirmed"][0]
        return NightBest(c.summary.mean, c.summary.low, c.summary.high, c.summary.n), c.best_trial, best["stage"]
    value = float(best[metric])
    return NightBest(value, value, value, 1), best["trial_id"], best["stage"]


def trial_costs(rows: list[dict]) -> dict[str, dict[str, float]]:
    """CPU/GPU hours per trial: the sum over its stages' last evaluations."""
    out: dict[str, dict[str, float]] = {}
    for r in last_evaluations(rows):
        c = out.setdefault(r["trial_id"], {"cpu_hours": 0.0, "gpu_hours": 0.0})
        c["cpu_hours"] += float(r.get("cpu_seconds") or 0.0) / 3600
        c["gpu_hours"] += float(r.get("gpu_seconds") or 0.0) / 3600
    return out


@dataclasses.dataclass
class NightOutcome:
    date: str
    regression: bool
    all_time_best: float
    best_value: float
    leaderboard_uri: str
    promoted: bool


class Leaderboard:
    def __init__(self, root: str, sweep_name: str, metric: str, mode: str) -> None:
        self.uri = NightlyLayout(root).leaderboard_dir
        self.sweep_name, self.metric, self.mode = sweep_name, metric, mode

    def _read(self, name: str) -> list[dict]:
        uri = storage.join(self.uri, name)
        return read_parquet(uri) if storage.exists(uri) else []

    def _write(self, name: str, rows: list[dict]) -> None:
        write_parquet(rows, storage.join(self.uri, name))

    def nights(self) -> list[dict]:
        rows = self._read("nights.parquet")
        others = sorted({r["sweep"] for r in rows} - {self.sweep_name})
        if others:
            raise HarnessError(f"{self.uri}: holds the nightly sweep {others[0]!r}, not {self.sweep_name!r}; "
                               "use one storage root per nightly sweep")
        return sorted(rows, key=lambda r: r["date"])

    def record_night(self, date: str, report: dict, night: SweepLayout, wall_seconds: float, seed: int,
                     margin: float, budget_ended: list[str] = ()) -> NightOutcome:
        """Adds (or replaces) tonight's rows, judges regression, promotes a new all-time best, renders."""
        if not report["ranked"]:
            raise HarnessError(f"{night.uri}: the night has no ranked trial")
        best = report["ranked"][0]
        tonight, best_trial, final_stage = tonights_best(report, self.metric)
        costs = trial_costs(report["results"])
        trial_rows = []
        stage1 = report["stage1_ranked"] if best["phase"] == "stage2" else []  # a staged night's Stage-I trials cost too
        for e in report["ranked"] + stage1:
            c = costs.get(e["trial_id"], {"cpu_hours": 0.0, "gpu_hours": 0.0})
            q = quality(e.get(self.metric), self.mode)
            trial_rows.append({"date": date, "sweep": self.sweep_name, "trial_id": e["trial_id"], "phase": e["phase"],
                               "status": e["final_status"], "epoch": e["epoch"], self.metric: e.get(self.metric),
                               "fidelity": e.get("fidelity"), "cpu_hours": c["cpu_hours"], "gpu_hours": c["gpu_hours"],
                               "quality": q, "quality_per_gpu_hour": per_hour(q, c["gpu_hours"]),
                               "quality_per_cpu_hour": per_hour(q, c["cpu_hours"])})
        cpu_h = sum(c["cpu_hours"] for c in costs.values())
        gpu_h = sum(c["gpu_hours"] for c in costs.values())

        earlier = [n for n in self.nights() if n["date"] != date]
        before = self._best_night([n for n in earlier if n["date"] < date])
        all_time_before = NightBest.of_row(before) if before is not None else None
        value = tonight.value
        regression = is_regression(tonight, all_time_before, self.mode, margin)
        all_time = tonight if all_time_before is None or self._better(value, all_time_before.value) else all_time_before
        ckpt = checkpoint.best(night.trial(best_trial).stage(final_stage), self.metric, self.mode)
        q = quality(value, self.mode)
        confirmed = report["confirmed"][0] if report["confirmed"] else None
        night = {"date": date, "sweep": self.sweep_name, "objective": self.metric, "mode": self.mode,
                 "best_trial": best_trial, "best_value": value, "best_ci_low": tonight.low, "best_ci_high": tonight.high,
                 "best_seeds": tonight.n, "best_config": confirmed.config_id if confirmed else best["config_id"],
                 "best_verdict": confirmed.verdict.sentence if confirmed else None,
                 "best_fidelity": best.get("fidelity") if confirmed is None else None,
                 "all_time_best": all_time.value, "all_time_best_ci_low": all_time.low,
                 "all_time_best_ci_high": all_time.high, "regression": regression, "margin": margin,
                 "trials": len(costs), "cpu_hours": cpu_h, "gpu_hours": gpu_h, "wall_hours": wall_seconds / 3600,
                 "quality": q, "quality_per_gpu_hour": per_hour(q, gpu_h), "quality_per_cpu_hour": per_hour(q, cpu_h),
                 "seed": seed, "report": report["report"], "checkpoint": ckpt,
                 "ended_by": f"time budget ({', '.join(budget_ended)})" if budget_ended else "completed"}
        nights = sorted(earlier + [night], key=lambda n: n["date"])
        promoted = False
        if ckpt is not None and value == self._best_value([n["best_value"] for n in nights]):
            self.promote(ckpt, {"date": date, "trial_id": best_trial, self.metric: value,
                                "ci": [tonight.low, tonight.high], "seeds": tonight.n})
            promoted = True
        self._write("nights.parquet", nights)
        self._write("trials.parquet", [r for r in self._read("trials.parquet") if r["date"] != date] + trial_rows)
        self.render(nights, trial_rows, night)
        return NightOutcome(date, regression, all_time.value, value, storage.join(self.uri, "leaderboard.html"), promoted)

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _best_night(self, nights: list[dict]) -> dict | None:
        best = None
        for n in nights:
            if n["best_value"] is not None and math.isfinite(n["best_value"]) and (
                    best is None or self._better(n["best_value"], best["best_value"])):
                best = n
        return best

    def _best_value(self, values: list[float]) -> float | None:
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return None
        return min(values) if self.mode == "min" else max(values)

    def promote(self, ckpt_uri: str, info: dict) -> None:
        """Copies the checkpoint (and the Stage-I checkpoint a Stage-II one refines) to best/.

        The old best's marker goes first and the new marker last, so best/ is never a loadable mix.
        """
        best_uri = storage.join(self.uri, "best")
        info_uri = storage.join(best_uri, "best.json")
        meta = checkpoint.read_meta(ckpt_uri)
        sources = {f"stage{meta['stage']}": ckpt_uri}
        parent = meta["config"].get("stage1_checkpoint")
        if meta["stage"] == 2 and parent:
            sources["stage1"] = parent
        if storage.exists(info_uri) and json.loads(storage.read_bytes(info_uri))["sources"] == sources:
            return  # already promoted (a night reported again): no need to copy gigabytes once more
        for name, src in sources.items():
            checkpoint.copy(src, storage.join(best_uri, name))
        storage.write_bytes(info_uri, json.dumps({**info, "sources": sources}, indent=2).encode())

    def render(self, nights: list[dict], trial_rows: list[dict], tonight: dict) -> None:
        trend = self._trend_png(nights)
        storage.write_bytes(storage.join(self.uri, "trend.png"), trend)
        md = self._markdown(nights, trial_rows, tonight)
        storage.write_bytes(storage.join(self.uri, "leaderboard.md"), md.encode())
        page = html_page(md, {"trend.png": trend}, title=f"Nightly leaderboard: {self.sweep_name}")
        storage.write_bytes(storage.join(self.uri, "leaderboard.html"), page.encode())

    def _trend_png(self, nights: list[dict]) -> bytes:
        fig, (ax, ax_cost) = plt.subplots(1, 2, figsize=(11, 3.6))
        dates = [n["date"] for n in nights]
        x = range(len(nights))
        bests = [NightBest.of_row(n) for n in nights]
        ax.errorbar(x, [b.value for b in bests],
                    yerr=[[max(0.0, b.value - b.low) for b in bests], [max(0.0, b.high - b.value) for b in bests]],
                    marker="o", capsize=3, label="best of the night (95 % interval)")
        ax.step(x, [n["all_time_best"] for n in nights], where="post", linestyle="--", label="all-time best")
        bad = [i for i, n in enumerate(nights) if n["regression"]]
        ax.scatter(bad, [nights[i]["best_value"] for i in bad], color="red", zorder=3, s=60, label="regression")
        ax.set_title(f"{self.metric} per night ({'lower' if self.mode == 'min' else 'higher'} is better)")
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

    def _markdown(self, nights: list[dict], trial_rows: list[dict], tonight: dict) -> str:
        m = self.metric
        lines = [f"# Nightly leaderboard: {self.sweep_name}", "",
                 f"Objective `{m}` ({self.mode}); quality = {m if self.mode == 'max' else '1/' + m}; "
                 f"regression margin {tonight['margin']:.0%}.", ""]
        if tonight["regression"]:
            lines += [f"**REGRESSION on {tonight['date']}**: best {m} {_fmt(tonight['best_value'])} "
                      f"{_interval(tonight)} is worse than the all-time best {_fmt(tonight['all_time_best'])} "
                      f"[{_fmt(tonight['all_time_best_ci_low'])}, {_fmt(tonight['all_time_best_ci_high'])}]: the 95 % "
                      f"intervals do not overlap and the means differ by more than {tonight['margin']:.0%}.", ""]
        top = next(n for n in nights if n["best_value"] == tonight["all_time_best"]) if nights else tonight
        lines += [f"**All-time best**: {m} = {_fmt(top['best_value'])} {_interval(top)}, trial `{top['best_trial']}` on "
                  f"{top['date']}; its checkpoint is promoted to leaderboard/best/.", "",
                  f"A night's best is its best confirmed config: the mean {m} over its confirmation seeds, with the 95 % "
                  "interval. A night is flagged as a regression only when its interval and the all-time best's do not "
                  f"overlap and the means differ by more than the margin.", "", "## Nights", ""]
        head = ["date", "best trial", m, "95 % interval", "seeds", "all-time best", "regression", "ended by", "trials",
                "CPU-h", "GPU-h", "quality/GPU-h", "quality/CPU-h", "report"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n in reversed(nights):
            cells = [n["date"], n["best_trial"], _fmt(n["best_value"]), _interval(n), str(n.get("best_seeds") or 1),
                     _fmt(n["all_time_best"]), "yes" if n["regression"] else "", n.get("ended_by") or "", str(n["trials"]),
                     _fmt(n["cpu_hours"]), _fmt(n["gpu_hours"]), _fmt(n["quality_per_gpu_hour"]),
                     _fmt(n["quality_per_cpu_hour"]), n["report"]]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "## Trend", "", "![trend](trend.png)", "", f"## Trials of {tonight['date']}", ""]
        head = ["trial", "phase", "status", "epoch", m, "fidelity", "CPU-h", "GPU-h", "quality/GPU-h", "quality/CPU-h"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for t in trial_rows:
            cells = [t["trial_id"], t["phase"], t["status"], str(t["epoch"]), _fmt(t[m]), _fmt(t["fidelity"]),
                     _fmt(t["cpu_hours"]), _fmt(t["gpu_hours"]), _fmt(t["quality_per_gpu_hour"]),
                     _fmt(t["quality_per_cpu_hour"])]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _interval(night: dict) -> str:
    b = NightBest.of_row(night)
    return f"[{_fmt(b.low)}, {_fmt(b.high)}]" if b.n > 1 else "(one seed)"

