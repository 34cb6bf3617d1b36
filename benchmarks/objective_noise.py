"""The anatomy of the sweep's objective on the shapes benchmark: where its noise comes from, and which
objective a search can trust.

    python benchmarks/objective_noise.py [--configs 16] [--seeds 4] [--epochs 6] [--n 1000] [--out DIR]
        [--sweep search_spaces/shapes.yaml] [--storage runs] [--rescore-draws 5] [--threads 2]
        [--generators live,ema0.99,ema0.999,ema0.999-copybn] [--no-large-draw] [--first-seed 0] [--shard I/N]

Records a grid once: --configs Stage-I configs (the sweep's paper defaults, its start points, then configs
drawn at random from its Stage-I search space with Optuna's RandomSampler, seed 0) x --seeds training seeds,
each trained --epochs epochs on --n scenes with the harness's own StageLoop (no Ray), every epoch evaluated.
Each run is one line of DIR/grid.jsonl, written as it finishes, so an interrupted recording resumes where it
stopped; benchmarks/search_efficiency.py --replay reads the same file.

Every evaluation scores several generators of the same training run, since a moving average does not change
the live generator's trajectory: ``live`` (today's objective), and moving averages of its weights
(harness/generator_ema.py) with decay 0.99 and 0.999 (BatchNorm statistics averaged) and 0.999 with the live
statistics copied (the naive average); --generators keeps a subset (live always). Each is scored on the
``base`` draw (today's evaluation: the first eval_samples test scenes, caption 0, noise seed 1234, against those
scenes' real images: common random numbers, the same at every evaluation and for every config) and, for the live
generator, the ``large`` draw (every
caption of those scenes, ten times as many samples, against the training split's real images; --no-large-draw
skips it, since it costs ten base draws an epoch).
The metrics are judge-FID, KID, caption fidelity and conditioning (harness/evaluate.py). At the last epoch, each run's live
and EMA-0.999 generators are re-scored with --rescore-draws other draws (captions and noise) of the base size.

Then, for each candidate objective (a generator, a draw, a metric and a window of the last K evaluations),
it reports the measures of docs/PERFORMANCE.md's "objective noise" section, each one relative so that an
objective with other units cannot win by scale:
- evaluation noise: the sd over re-scoring draws of one checkpoint, over its mean (median over runs);
- jitter: the sd of successive differences over the last half of training, over the run's level there;
- seed spread: the within-config sd at the final budget over the grand mean, and the config share of the
  variance, ICC = var(config means) / (var(config means) + mean within-config variance);
- rank agreement: Kendall's tau between the configs' mean ranking at each epoch and at the last;
- agreement with conditioning: Kendall's tau between the configs' ranking by the objective and by the live
  generator's conditioning (harness/evaluate.py; all-attributes fidelity in grids recorded before it was kept).
Writes DIR/objective_noise.json (printed too) and DIR/objective_noise.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import optuna
import torch
from scipy import stats
from tqdm import tqdm

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import REPO_ROOT, hyperparams  # noqa: E402
from harness.config import load_sweep  # noqa: E402
from harness.data.dataset import ShapesData  # noqa: E402
from harness.data.ensure import ensure_dataset  # noqa: E402
from harness.data.judge import load_or_train_judge  # noqa: E402
from harness.data.shapes import ATTRIBUTES  # noqa: E402
from harness.data.shapes_store import read_split  # noqa: E402
from harness.evaluate import judge_features, shapes_metrics  # noqa: E402
from harness.generator_ema import GeneratorEMA  # noqa: E402
from harness.loop import Diverged, LoopSpec, StageLoop  # noqa: E402
from harness.objective import Objective  # noqa: E402
from harness.optuna_space import optuna_space  # noqa: E402
from models.config import get_profile  # noqa: E402

# Generators scored at every evaluation: (name, decay, BatchNorm statistics); live is the trained generator.
AVERAGES = (("ema0.99", 0.99, "average"), ("ema0.999", 0.999, "average"), ("ema0.999-copybn", 0.999, "copy"))
LARGE_DRAW_GENERATORS = ("live",)  # the large draw costs 10x the base: the live G only
RESCORE_GENERATORS = ("live", "ema0.999")
# "conditioning" (harness/evaluate.py) is each attribute's fidelity above chance, averaged: at a short budget no
# image has every attribute right (fidelity ~0), while each attribute already moves.
METRICS = {"fid": "min", "kid": "min", "fidelity": "max", "conditioning": "max"}
WINDOWS = (1, 2, 3)
NOISE_SEED = 1234  # harness/loop.py StageLoop.sample's default: today's evaluation noise


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default=os.path.join(REPO_ROOT, "search_spaces", "shapes.yaml"))
    p.add_argument("--storage", default="runs", help="where the dataset is built or found (default: runs)")
    p.add_argument("--out", default="runs/benchmarks/objective_noise", help="grid.jsonl and the results go here")
    p.add_argument("--configs", type=int, default=16)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--first-seed", type=int, default=0, help="train seeds FIRST..FIRST+SEEDS-1")
    p.add_argument("--shard", default="0/1", metavar="I/N",
                   help="record every N-th run of the grid from the I-th: N processes with I = 0..N-1 and their own "
                        "--out record the grid together; cat their grid.jsonl files for --analyse-only")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--n", type=int, default=1000, help="scenes in the dataset (90 %% train)")
    p.add_argument("--eval-samples", type=int, help="the base draw's size (default: the sweep's data.eval_samples)")
    p.add_argument("--rescore-draws", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--generators", default=",".join(["live", *(name for name, *_ in AVERAGES)]),
                   help="the generators scored at every evaluation, comma-separated (live is always scored)")
    p.add_argument("--no-large-draw", dest="large_draw", action="store_false",
                   help="score the base draw only (the large one costs ten base draws an epoch)")
    p.add_argument("--analyse-only", action="store_true", help="read DIR/grid.jsonl as it is; train nothing")
    args = p.parse_args(argv)
    known = ["live", *(name for name, *_ in AVERAGES)]
    asked = [g.strip() for g in args.generators.split(",") if g.strip()]
    unknown = [g for g in asked if g not in known]
    if unknown:
        p.error(f"--generators: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    args.generators = tuple(g for g in known if g in asked or g == "live")
    shard = args.shard.split("/")
    if len(shard) != 2 or not all(x.isdigit() for x in shard) or not int(shard[0]) < int(shard[1]):
        p.error(f"--shard: I/N with 0 <= I < N, got {args.shard}")
    args.shard = (int(shard[0]), int(shard[1]))
    for name in ("configs", "seeds", "epochs", "rescore_draws"):
        if getattr(args, name) < (2 if name in ("configs", "seeds", "epochs") else 1):
            p.error(f"--{name.replace('_', '-')}: too small ({getattr(args, name)})")
    return args


def grid_configs(sweep, count: int) -> list[dict]:
    """The paper defaults, the sweep's start points, then random draws from its Stage-I space (seed 0)."""
    points = sweep.stage1.points()[:count]
    space = optuna_space(sweep.stage1.search)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    while len(points) < count:
        points.append(dict(study.ask(space).params))
    return points


@dataclasses.dataclass
class Bench:
    sweep: object
    data: ShapesData
    judge: torch.nn.Module
    draws: dict  # name -> (EvalSet, the real reference's judge features)
    rescore: list  # [(EvalSet, noise seed)]
    generators: tuple[str, ...]  # live and the averages scored at every evaluation


def setup(args) -> Bench:
    sweep = load_sweep(args.sweep)
    data_cfg = dataclasses.replace(sweep.data, n=args.n, **({"eval_samples": args.eval_samples} if args.eval_samples else {}))
    sweep = dataclasses.replace(sweep, data=data_cfg)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    uri = ensure_dataset(args.storage, data_cfg, sweep.model.profile, log=log)
    resolution = get_profile(sweep.model.profile).stage1.image_size
    data = ShapesData(uri, data_cfg.encoder, resolution, seed=0, text_norm=data_cfg.text_norm)
    judge, _ = load_or_train_judge(uri, log=log)
    test = read_split(uri, "test", data_cfg.encoder, (resolution,))
    n = min(data_cfg.eval_samples, len(test.scene_ids))
    scenes = np.arange(n)
    base = data.eval_draw(test, scenes, np.zeros(n, np.int64), resolution)
    draws = {"base": (base, judge_features(judge, base.real_images_B3HW))}
    if args.large_draw:
        every = np.repeat(scenes, 10)
        large = data.eval_draw(test, every, np.tile(np.arange(10), n), resolution)
        # The large draw's reference: the training split's real images (ten times the test scenes, same distribution).
        train_real = torch.from_numpy(data.images).float().div_(127.5).sub_(1.0)
        draws["large"] = (large, judge_features(judge, train_real))
    rng = np.random.default_rng(7)
    rescore = [(data.eval_draw(test, np.sort(rng.choice(len(test.scene_ids), n, replace=False)),
                               rng.integers(10, size=n), resolution), NOISE_SEED + 1 + k)
               for k in range(args.rescore_draws)]
    return Bench(sweep, data, judge, draws, rescore, args.generators)


def _scores(bench: Bench, loop: StageLoop, g, eval_set, real_features, seed: int) -> dict:
    fake, _ = loop.sample(eval_set.text_BD, seed=seed, using=g, batch=256)
    m = shapes_metrics(bench.judge, fake, eval_set, real_features)
    keys = ("fid", "kid", "kid_std", "fidelity", "conditioning", *(f"fidelity_{a}" for a in ATTRIBUTES))
    return {k: round(float(m[k]), 6) for k in keys}


def train_run(bench: Bench, params: dict, seed: int, epochs: int) -> dict:
    sweep = bench.sweep
    train = dataclasses.replace(sweep.train, seed=seed, g_ema=0.0)  # the averages are kept here, one per decay
    loop = StageLoop(LoopSpec.from_sweep(sweep, hyperparams.from_sampled(1, params), train),
                     bench.data.text_dim, 0, torch.device("cpu"))
    averages = {name: GeneratorEMA(loop.g, decay, bn) for name, decay, bn in AVERAGES if name in bench.generators}
    generators = lambda: {"live": loop.g, **{k: e.module for k, e in averages.items()}}  # noqa: E731
    data = bench.data
    data.seed = seed  # the batch order follows the training seed, as in a sweep's trial
    t0, curve, status = time.perf_counter(), [], "finished"
    for epoch in range(epochs):
        try:
            for batch in data.batches(sweep.train.batch_size, epoch):
                loop.train_step(batch)
                for ema in averages.values():
                    ema.update(loop.g)
            loop.guard.check()
        except Diverged:
            status = "diverged"
            break
        loop.end_epoch()
        evals = {}
        for name, g in generators().items():
            evals[f"{name}/base"] = _scores(bench, loop, g, *bench.draws["base"], NOISE_SEED)
            if name in LARGE_DRAW_GENERATORS and "large" in bench.draws:
                evals[f"{name}/large"] = _scores(bench, loop, g, *bench.draws["large"], NOISE_SEED)
        curve.append({"epoch": epoch + 1, "evals": evals})
    rescored = {}
    if status == "finished":
        for name in (g for g in RESCORE_GENERATORS if g in bench.generators):
            g = generators()[name]
            rescored[f"{name}/base"] = [_scores(bench, loop, g, es, None, s) for es, s in bench.rescore]
    return {"status": status, "curve": curve, "rescored": rescored, "seconds": round(time.perf_counter() - t0, 1)}


def record(args, bench: Bench, path: str) -> list[dict]:
    configs = grid_configs(bench.sweep, args.configs)
    done = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                done[(r["config"], r["seed"])] = r
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    every = [(c, s) for s in seeds for c in range(len(configs))]  # seed-major: a stopped grid has whole seeds
    i, n = args.shard
    todo = [run for k, run in enumerate(every) if k % n == i and run not in done]
    with open(path, "a") as f, tqdm(todo, desc="grid runs", unit="run", file=sys.stderr) as bar:
        for c, s in bar:
            run = {"config": c, "seed": s, "params": configs[c], "epochs": args.epochs,
                   **train_run(bench, configs[c], s, args.epochs)}
            f.write(json.dumps(run) + "\n")
            f.flush()
            done[(c, s)] = run
    return [done[k] for k in sorted(done)]


def read_grid(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


# ---------- analysis ----------

def candidates(runs: list[dict]) -> list[tuple[str, str, int]]:
    """(evaluation key, metric, window) of every objective the grid can score."""
    # Only what every evaluation of every run has: a grid resumed across versions may lack a key in older runs.
    keys = sorted(set.intersection(*(set(e["evals"]) for r in runs for e in r["curve"])))
    recorded = set.intersection(*(set(v) for r in runs for e in r["curve"] for v in e["evals"].values()))
    return [(k, m, w) for k in keys for m in METRICS if m in recorded for w in WINDOWS]


def series(run: dict, key: str, metric: str, window: int) -> np.ndarray:
    """A run's objective after each epoch: the mean of its last ``window`` evaluations (fewer at the start)."""
    raw = [float(e["evals"][key][metric]) for e in run["curve"]]
    return np.array(Objective(metric, window).after_each(raw))


def icc(groups: list[np.ndarray]) -> float:
    """The config share of the variance: var(config means) / (var(config means) + mean within-config variance)."""
    means = np.array([g.mean() for g in groups])
    within = np.mean([g.var(ddof=1) for g in groups])
    between = means.var(ddof=1)
    return float(between / (between + within)) if between + within > 0 else float("nan")


def measure(runs: list[dict], key: str, metric: str, window: int) -> dict:
    finished = [r for r in runs if r["status"] == "finished"]
    epochs = min(len(r["curve"]) for r in finished)
    by_config: dict[int, list[np.ndarray]] = {}
    jitter, levels = [], []
    for r in finished:
        s = series(r, key, metric, window)[:epochs]
        by_config.setdefault(r["config"], []).append(s)
        half = s[epochs // 2 - 1:] if epochs >= 4 else s
        if len(half) >= 2:
            jitter.append(np.std(np.diff(half), ddof=1) if len(half) > 2 else abs(np.diff(half)[0]))
            levels.append(abs(half.mean()))
    configs = sorted(c for c, v in by_config.items() if len(v) >= 2)
    final = [np.array([s[-1] for s in by_config[c]]) for c in configs]
    grand = float(np.mean([v.mean() for v in final]))
    within_sd = float(np.sqrt(np.mean([v.var(ddof=1) for v in final])))
    sign = 1 if METRICS[metric] == "min" else -1
    final_means = np.array([v.mean() for v in final])
    taus = {}
    for e in range(epochs):
        means_e = np.array([np.mean([s[e] for s in by_config[c]]) for c in configs])
        taus[e + 1] = round(float(stats.kendalltau(means_e, final_means).statistic), 3)
    # The conditioning a ranking should agree with (all-attributes fidelity in grids recorded before conditioning
    # was kept), always on the live generator's base draw, so that every candidate has one yardstick.
    conditioning = "conditioning" if "conditioning" in finished[0]["curve"][-1]["evals"]["live/base"] else "fidelity"
    yardstick = np.array([np.mean([r["curve"][epochs - 1]["evals"]["live/base"][conditioning] for r in finished
                                   if r["config"] == c]) for c in configs])
    out = {"objective": f"{metric} {key} window {window}", "key": key, "metric": metric, "window": window,
           "mode": METRICS[metric], "configs": len(configs), "runs": len(finished), "epochs": epochs,
           "level": round(grand, 6),
           "jitter_rel": round(float(np.median(np.array(jitter) / np.maximum(levels, 1e-12))), 4),
           "seed_sd_rel": round(within_sd / abs(grand), 4) if grand else None,
           "icc": round(icc(final), 3),
           "tau_by_epoch": taus, "tau_half": taus[max(1, epochs // 2)],
           "conditioning_measure": conditioning,
           "tau_with_conditioning": round(float(-sign * stats.kendalltau(final_means, yardstick).statistic), 3)}
    rescores = [r["rescored"][key] for r in finished if key in r.get("rescored", {})]
    if rescores and window == 1:
        rel = [np.std([d[metric] for d in draws], ddof=1) / abs(np.mean([d[metric] for d in draws])) for draws in rescores]
        out["eval_noise_rel"] = round(float(np.median(rel)), 4)
    return out


def analyse(runs: list[dict]) -> dict:
    table = [measure(runs, *c) for c in candidates(runs)]
    baseline = next(t for t in table if t["key"] == "live/base" and t["metric"] == "fid" and t["window"] == 1)
    return {"baseline": baseline, "candidates": table,
            "diverged_runs": sum(r["status"] != "finished" for r in runs),
            "seconds_per_run": round(float(np.median([r["seconds"] for r in runs])), 1)}


def plot(runs: list[dict], result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    shown = [r for r in runs if r["status"] == "finished" and r["config"] < 3]
    colours = plt.cm.tab10.colors
    # The curves of the objective the demo ranks by, where the grid recorded it (judge-FID in older grids).
    first = next(r["curve"][0]["evals"]["live/base"] for r in runs if r["curve"])
    metric = "conditioning" if "conditioning" in first else "fid"
    for r in shown:
        e = [p["epoch"] for p in r["curve"]]
        ax.plot(e, [p["evals"]["live/base"][metric] for p in r["curve"]], color=colours[r["config"]], alpha=0.45, lw=1)
        if "ema0.999/base" in r["curve"][0]["evals"]:
            ax.plot(e, [p["evals"]["ema0.999/base"][metric] for p in r["curve"]], color=colours[r["config"]], lw=2)
    ax.set(title=f"{metric}, configs 0-2, every seed:\nlive (thin), EMA 0.999 (thick, where recorded)", xlabel="epoch",
           ylabel=metric, yscale="log" if metric == "fid" else "linear")
    rows = [t for t in result["candidates"] if t["metric"] != "fidelity"]
    rows.sort(key=lambda t: (t["metric"], t["key"], t["window"]))
    labels = [f"{t['metric']} {t['key']} w{t['window']}" for t in rows]
    y = np.arange(len(rows))
    axes[1].barh(y, [t["icc"] for t in rows], color="tab:blue")
    axes[1].set(yticks=y, yticklabels=labels, title="config share of variance (ICC), final epoch", xlim=(0, 1))
    axes[1].tick_params(axis="y", labelsize=6)
    axes[2].barh(y - 0.2, [t["tau_half"] for t in rows], height=0.4, label="tau half vs full budget")
    axes[2].barh(y + 0.2, [t["jitter_rel"] for t in rows], height=0.4, label="jitter / level")
    axes[2].set(yticks=y, yticklabels=[""] * len(rows), title="rank agreement and relative jitter")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> dict:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name"))
    except (StopIteration, OSError):
        cpu = platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "grid.jsonl")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.analyse_only:
        if not os.path.exists(path):
            print(f"--analyse-only: {path} does not exist; record a grid first", file=sys.stderr)
            return 2
        runs = read_grid(path)
    else:
        runs = record(args, setup(args), path)
        if args.shard[1] > 1:  # one shard's runs alone may leave a config without two seeds: analyse them together
            print(json.dumps({"grid": path, "runs": len(runs), "next": "cat every shard's grid.jsonl into DIR/grid.jsonl, "
                              "then --analyse-only --out DIR"}))
            return 0
    result = {"machine": machine(), "grid": path, "configs": len({r["config"] for r in runs}),
              "seeds": len({r["seed"] for r in runs}), **analyse(runs), "wall_s": round(time.perf_counter() - t0, 1)}
    with open(os.path.join(args.out, "objective_noise.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(runs, result, os.path.join(args.out, "objective_noise.png"))
    print(json.dumps({k: v for k, v in result.items() if k != "candidates"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
