"""Training-step throughput of the paper profile: plain loop vs inside Ray Train (1 and 2 workers).

    python benchmarks/step_throughput.py [--stages 1,2] [--modes plain,ray1,ray2] [--steps 4] [--warmup 1]
                                         [--precision fp32|bf16] [--profile paper] [--compile]

Prints one JSON object: per stage and mode, img/s and ms/step (median over the measured steps),
peak RSS per process, and the Ray Train overhead against the plain loop with the same threads.
Batches are synthetic (random images and embeddings): this measures the model step, not data loading.
Defaults follow REFERENCE.md: Stage-I at batch 64, Stage-II at batch 16.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from harness import REPO_ROOT  # noqa: E402

from harness.config import StageRunConfig, sweep_from_dict  # noqa: E402
from harness.data.dataset import Batch  # noqa: E402
from harness.loop import StageLoop  # noqa: E402
from models import Stage1Generator  # noqa: E402
from models.config import get_profile  # noqa: E402

BATCH = {1: 64, 2: 16}
TEXT_DIM = 1024
GFLOP_PER_IMAGE_STEP = {1: 10.2, 2: 128.7}  # REFERENCE.md, paper profile


def _loop(stage: int, profile: str, precision: str, device: torch.device) -> StageLoop:
    sweep = sweep_from_dict({"model": {"profile": profile}, "train": {"precision": precision}})
    run = StageRunConfig(stage=stage, run_uri="-", dataset_uri="-", data=sweep.data, profile=profile, loss="bce",
                         train=sweep.train, epochs=1, params={}, stage1_checkpoint="-" if stage == 2 else None)
    stage1 = None
    if stage == 2:  # an untrained Stage-I of the profile: its cost is what matters here
        stage1 = Stage1Generator(dataclasses.replace(get_profile(profile).stage1, text_dim=TEXT_DIM))
    return StageLoop(run, TEXT_DIM, 0, device, stage1)


def measure(stage: int, profile: str, precision: str, steps: int, warmup: int, batch: int, device=None,
            compile: bool = False) -> dict:
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loop = _loop(stage, profile, precision, device)
    if compile:  # torch.compile (inductor) of G and D; the first warm-up step pays the compilation
        loop.wrap(torch.compile)
    size = loop.image_size
    b = Batch(torch.rand(batch, 3, size, size) * 2 - 1, torch.randn(batch, TEXT_DIM), torch.arange(batch))
    times, finite = [], True
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        m = loop.train_step(b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
        finite &= all(map(lambda v: v == v and abs(v) != float("inf"), (m["d_loss"], m["g_loss"])))
    ms = statistics.median(times) * 1000
    return {"ms_per_step": round(ms, 1), "img_per_s": round(batch / ms * 1000, 2), "steps": steps,
            "finite_losses": finite, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _ray_fn(config: dict) -> None:
    import ray.train

    torch.set_num_threads(config["threads"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = torch.device("cpu")
    loop = _loop(config["stage"], config["profile"], config["precision"], device)
    if world > 1:
        loop.wrap(lambda m: torch.nn.parallel.DistributedDataParallel(m))
    size = loop.image_size
    bs = config["batch"]
    b = Batch(torch.rand(bs, 3, size, size) * 2 - 1, torch.randn(bs, TEXT_DIM), torch.arange(bs))
    times = []
    for i in range(config["warmup"] + config["steps"]):
        t = time.perf_counter()
        loop.train_step(b)
        if i >= config["warmup"]:
            times.append(time.perf_counter() - t)
    ms = statistics.median(times) * 1000
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(os.path.join(config["out"], f"rank{rank}.json"), "w") as f:
        json.dump({"ms_per_step": ms, "peak_rss_mb": rss}, f)
    ray.train.report({"ms_per_step": ms})


def measure_ray(stage, profile, precision, steps, warmup, batch, workers, threads) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        TorchTrainer(
            _ray_fn,
            train_loop_config=dict(stage=stage, profile=profile, precision=precision, steps=steps, warmup=warmup,
                                   batch=batch, threads=threads, out=out),
            scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": threads}),
            run_config=RunConfig(name=f"bench-s{stage}-w{workers}-{int(time.time())}", storage_path=out),
        ).fit()
        wall = time.perf_counter() - t0
        ranks = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(workers)]
    ms = max(r["ms_per_step"] for r in ranks)  # the step ends when the slowest rank's all-reduce does
    return {"ms_per_step": round(ms, 1), "img_per_s": round(batch * workers / ms * 1000, 2),
            "global_batch": batch * workers, "steps": steps, "fit_wall_s": round(wall, 1),
            "peak_rss_mb_per_worker": [round(r["peak_rss_mb"], 1) for r in ranks]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default="1,2")
    p.add_argument("--modes", default="plain,ray1,ray2")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    p.add_argument("--profile", default="paper")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--compile", action="store_true", help="plain mode only: torch.compile G and D (use --warmup >= 2)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads": args.threads, "torch": torch.__version__,
                          "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
              "profile": args.profile, "precision": args.precision, "compile": args.compile, "results": {}}
    modes = args.modes.split(",")
    if any(m.startswith("ray") for m in modes):
        import ray

        ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": REPO_ROOT}})
    for stage in map(int, args.stages.split(",")):
        res = {}
        for mode in modes:
            if mode == "plain":
                res[mode] = measure(stage, args.profile, args.precision, args.steps, args.warmup, BATCH[stage],
                                    compile=args.compile)
            elif mode == "ray1":
                res[mode] = measure_ray(stage, args.profile, args.precision, args.steps, args.warmup, BATCH[stage], 1, args.threads)
            elif mode == "ray2":
                per = max(1, args.threads // 2)
                res[mode] = measure_ray(stage, args.profile, args.precision, args.steps, args.warmup, BATCH[stage], 2, per)
            print(f"stage {stage} {mode}: {res[mode]}", file=sys.stderr, flush=True)
        if "plain" in res and "ray1" in res:
            res["ray1_overhead_pct"] = round((res["ray1"]["ms_per_step"] / res["plain"]["ms_per_step"] - 1) * 100, 1)
        res["gflop_per_image_step"] = GFLOP_PER_IMAGE_STEP[stage]
        if "plain" in res:
            res["plain"]["achieved_gflop_per_s"] = round(res["plain"]["img_per_s"] * GFLOP_PER_IMAGE_STEP[stage], 1)
        report["results"][f"stage{stage}"] = res
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
