"""Training-step throughput of the paper profile: plain loop vs inside Ray Train (1 and 2 workers).

    python benchmarks/step_throughput.py [--stages 1,2] [--modes plain,ray1,ray2] [--steps 4] [--warmup 1]
                                         [--precision fp32|bf16|auto] [--profile paper] [--compile]
                                         [--device auto|cpu|cuda] [--batch-stage1 64] [--batch-stage2 16]

Prints one JSON object: per stage and mode, img/s and ms/step (median over the measured steps),
peak RSS per process, and the Ray Train overhead against the plain loop with the same threads.
Batches are synthetic (random images and embeddings): this measures the model step, not data loading.
Defaults follow docs/REFERENCE.md: Stage-I at batch 64, Stage-II at batch 16. The report adds the device's
measured matrix-product rate in the step's precision (bf16 or fp32) and, for the paper profile, the
fraction of it a training step achieves (docs/REFERENCE.md's FLOP counts); ray2 needs 2 GPUs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

import torch

from harness.config import ResourcesConfig, sweep_from_dict
from harness.data.dataset import Batch
from harness.hyperparams import paper_defaults
from harness.loop import LoopSpec, StageLoop
from models import Stage1Generator
from models.config import get_profile

BATCH = {1: 64, 2: 16}
TEXT_DIM = 1024
GFLOP_PER_IMAGE_STEP = {1: 10.2, 2: 128.7}  # docs/REFERENCE.md, paper profile


def build_loop(stage: int, profile: str, precision: str, device: torch.device) -> StageLoop:
    sweep = sweep_from_dict({"model": {"profile": profile}, "train": {"precision": precision}})
    spec = LoopSpec.from_sweep(sweep, paper_defaults(stage))
    stage1 = None
    if stage == 2:  # an untrained Stage-I of the profile: its cost is what matters here
        stage1 = Stage1Generator(dataclasses.replace(get_profile(profile).stage1, text_dim=TEXT_DIM))
    return StageLoop(spec, TEXT_DIM, 0, device, stage1)


def synthetic_batch(loop: StageLoop, size: int) -> Batch:
    """Random images of the loop's size and random caption embeddings, every key distinct."""
    side = loop.image_size
    return Batch(torch.rand(size, 3, side, side) * 2 - 1, torch.randn(size, TEXT_DIM), torch.arange(size))


def _time_steps(loop: StageLoop, batch: int, warmup: int, steps: int) -> tuple[float, bool]:
    """Median seconds per train_step on one synthetic batch, and whether every loss stayed finite."""
    device = loop.device
    b = synthetic_batch(loop, batch)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times, finite = [], True
    for i in range(warmup + steps):
        sync()
        t = time.perf_counter()
        m = loop.train_step(b)
        sync()  # CUDA work is asynchronous: the step ends when the device is done
        if i >= warmup:
            times.append(time.perf_counter() - t)
        finite &= all(math.isfinite(m[k]) for k in ("d_loss", "g_loss"))
    return statistics.median(times), finite


def measure(stage: int, profile: str, precision: str, steps: int, warmup: int, batch: int, device: torch.device,
            compile: bool = False) -> dict:
    loop = build_loop(stage, profile, precision, device)
    if compile:  # torch.compile (inductor) of G and D; the first warm-up step pays the compilation
        loop.compile("default")
    seconds, finite = _time_steps(loop, batch, warmup, steps)
    ms = seconds * 1000
    return {"ms_per_step": round(ms, 2), "img_per_s": round(batch / ms * 1000, 2), "batch": batch, "steps": steps,
            "finite_losses": finite, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _ray_fn(config: dict) -> None:
    import ray.train
    import ray.train.torch

    torch.set_num_threads(config["threads"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if config["use_gpu"] else torch.device("cpu")
    loop = build_loop(config["stage"], config["profile"], config["precision"], device)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        loop.wrap(lambda m: torch.nn.parallel.DistributedDataParallel(m, device_ids=ids))
    seconds, _ = _time_steps(loop, config["batch"], config["warmup"], config["steps"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(os.path.join(config["out"], f"rank{rank}.json"), "w") as f:
        json.dump({"ms_per_step": seconds * 1000, "peak_rss_mb": rss, "device": str(device)}, f)
    ray.train.report({"ms_per_step": seconds * 1000})


def measure_ray(stage, profile, precision, steps, warmup, batch, workers, threads, use_gpu) -> dict:
    from ray.train import RunConfig
    from ray.train.torch import TorchTrainer

    from harness.fit import scaling_config

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        TorchTrainer(
            _ray_fn,
            train_loop_config=dict(stage=stage, profile=profile, precision=precision, steps=steps, warmup=warmup,
                                   batch=batch, threads=threads, out=out, use_gpu=use_gpu),
            scaling_config=scaling_config(ResourcesConfig(workers=workers, cpus_per_worker=threads,
                                                          gpus_per_worker=1.0 if use_gpu else 0.0)),
            run_config=RunConfig(name=f"bench-s{stage}-w{workers}-{int(time.time())}", storage_path=out),
        ).fit()
        wall = time.perf_counter() - t0
        ranks = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(workers)]
    ms = max(r["ms_per_step"] for r in ranks)  # the step ends when the slowest rank's all-reduce does
    return {"ms_per_step": round(ms, 2), "img_per_s": round(batch * workers / ms * 1000, 2),
            "global_batch": batch * workers, "steps": steps, "fit_wall_s": round(wall, 1),
            "devices": [r["device"] for r in ranks],
            "peak_rss_mb_per_worker": [round(r["peak_rss_mb"], 1) for r in ranks]}


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """Measured matrix-product rate of this device in ``dtype`` (random square operands): the ceiling a
    training step is held against. On CPU this is the rate of the threads torch was given."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            a @ b
        end.record()
        torch.cuda.synchronize()
        return 2 * n**3 * repeats / (start.elapsed_time(end) / 1000) / 1e9
    fastest = math.inf  # a peak: the best of the repeats (a shared VM's noise only slows a product down)
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        fastest = min(fastest, time.perf_counter() - t0)
    return 2 * n**3 / fastest / 1e9


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default="1,2")
    p.add_argument("--modes", default="plain,ray1,ray2")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    p.add_argument("--profile", default="paper")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when available")
    p.add_argument("--batch-stage1", type=int, default=BATCH[1])
    p.add_argument("--batch-stage2", type=int, default=BATCH[2])
    p.add_argument("--compile", action="store_true", help="plain mode only: torch.compile G and D (use --warmup >= 2)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    want_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if want_cuda else "cpu")
    use_gpu = device.type == "cuda"
    batches = {1: args.batch_stage1, 2: args.batch_stage2}
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads": args.threads, "torch": torch.__version__,
                          "cuda": torch.cuda.get_device_name(0) if use_gpu else None},
              "profile": args.profile, "precision": args.precision, "compile": args.compile, "results": {}}
    # The step's own precision: bf16 under autocast (auto on a GPU), else fp32.
    bf16 = args.precision == "bf16" or (args.precision == "auto" and use_gpu)
    peak_dtype = torch.bfloat16 if bf16 else torch.float32
    report["machine"]["matmul_peak"] = {"dtype": str(peak_dtype).removeprefix("torch."),
                                        "gflop_per_s": round(matmul_peak_gflops(device, peak_dtype), 1)}
    modes = args.modes.split(",")
    if use_gpu and "ray2" in modes and torch.cuda.device_count() < 2:
        modes.remove("ray2")  # two NCCL ranks cannot share one GPU
        report["skipped"] = "ray2: needs 2 GPUs"
    if any(m.startswith("ray") for m in modes):
        import ray

        from harness.cli import worker_pythonpath

        ray.init(num_cpus=args.threads, num_gpus=torch.cuda.device_count() if use_gpu else 0,
                 include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": worker_pythonpath()}})
    for stage in map(int, args.stages.split(",")):
        res, batch = {}, batches[stage]
        for mode in modes:
            if mode == "plain":
                res[mode] = measure(stage, args.profile, args.precision, args.steps, args.warmup, batch, device,
                                    compile=args.compile)
            elif mode == "ray1":
                res[mode] = measure_ray(stage, args.profile, args.precision, args.steps, args.warmup, batch, 1,
                                        args.threads, use_gpu)
            elif mode == "ray2":
                per = max(1, args.threads // 2)
                res[mode] = measure_ray(stage, args.profile, args.precision, args.steps, args.warmup, batch, 2, per,
                                        use_gpu)
            print(f"stage {stage} {mode}: {res[mode]}", file=sys.stderr, flush=True)
        if "plain" in res and "ray1" in res:
            res["ray1_overhead_pct"] = round((res["ray1"]["ms_per_step"] / res["plain"]["ms_per_step"] - 1) * 100, 1)
        if args.profile == "paper" and "plain" in res:  # docs/REFERENCE.md's FLOP counts are the paper networks'
            res["gflop_per_image_step"] = GFLOP_PER_IMAGE_STEP[stage]
            achieved = res["plain"]["img_per_s"] * GFLOP_PER_IMAGE_STEP[stage]
            res["plain"]["achieved_gflop_per_s"] = round(achieved, 1)
            res["plain"]["fraction_of_matmul_peak"] = round(achieved / report["machine"]["matmul_peak"]["gflop_per_s"], 4)
        report["results"][f"stage{stage}"] = res
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
