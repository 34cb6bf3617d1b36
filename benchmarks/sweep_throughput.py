"""Sweep throughput with K trials packed on one device: trial-epochs per device-hour and share of peak.

    python benchmarks/sweep_throughput.py [--profiles small,paper] [--trials 1,2,4,8,16] [--seconds 60]
                                          [--stage 1] [--precision auto] [--compile none|default|reduce-overhead]
                                          [--device auto|cpu|cuda] [--threads-per-trial 1]

For each profile and K, K trial processes train the profile's Stage-I (or Stage-II) side by side on one
device, as K trials with ``resources.gpus_per_worker: 1/K`` do: each capped at 1/K of the GPU's memory
(the harness's own cap), each running the harness's StageLoop on a synthetic batch. After a warm-up all
K start together and step for ``--seconds``. Reported per K:

- ``trial_epochs_per_device_hour``: images per second of all K trials, x 3600, over one epoch's images
  (the shapes demo's 3,600 scenes for small/tiny, CUB's 8,855 for paper);
- ``speedup``: that throughput over K = 1's;
- ``share_of_peak``: achieved FLOP/s (torch's FLOP counter on one step) over the device's measured
  matrix-product rate in the step's precision;
- ``gpu_util_pct`` / ``gpu_mem_used_gib``: NVML's utilisation and memory while they ran (mean and max;
  nvidia-ml-py, the ``gpu`` extra, else nvidia-smi); null on a CPU.

Prints one JSON object. CPU runs work (``--device cpu``) and check the mechanics; the figures that
matter come from a GPU (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

import torch
from step_throughput import build_loop, matmul_peak_gflops, synthetic_batch  # run as a script, its directory is on the path

from harness.config import COMPILE_MODES, DEVICES, PRECISIONS
from harness.loop import StageLoop

BATCH = {"paper": {1: 64, 2: 16}, "small": {1: 16, 2: 16}, "small-narrow": {1: 16, 2: 16}, "tiny": {1: 16, 2: 16}}
EPOCH_IMAGES = {"paper": 8855, "small": 3600, "small-narrow": 3600, "tiny": 3600}


def _loop(profile: str, stage: int, precision: str, compile_mode: str, device: torch.device) -> StageLoop:
    loop = build_loop(stage, profile, precision, device)
    loop.compile(compile_mode)
    return loop


def flop_per_step(profile: str, stage: int, batch: int) -> float:
    """FLOPs of one training step (forward and backward of D and G), counted by torch on the CPU."""
    from torch.utils.flop_counter import FlopCounterMode

    loop = _loop(profile, stage, "fp32", "none", torch.device("cpu"))
    b = synthetic_batch(loop, batch)
    loop.train_step(b)  # the first step allocates optimizer state
    with FlopCounterMode(display=False) as counter:
        loop.train_step(b)
    return float(counter.get_total_flops())


def _trial(index: int, args: dict, barrier, results) -> None:
    """One packed trial: cap its memory, warm up, wait for the others, step for the window."""
    torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0 / args["k"], device)
    loop = _loop(args["profile"], args["stage"], args["precision"], args["compile"], device)
    batch = synthetic_batch(loop, args["batch"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args["warmup"]):
        loop.train_step(batch)
    sync()
    barrier.wait()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args["seconds"]:
        loop.train_step(batch)  # the loop's own guard reads the losses back every check_every steps
        steps += 1
    sync()
    results.put({"trial": index, "steps": steps, "seconds": time.perf_counter() - t0})


class _NvmlSampler(threading.Thread):
    """GPU utilisation and memory every 0.2 s while the trials step: through NVML (nvidia-ml-py), else
    through ``nvidia-smi``'s query of the same counters; nothing without either."""

    def __init__(self, device_index: int) -> None:
        super().__init__(daemon=True)
        self.index, self.util, self.mem_gib, self.stop = device_index, [], [], threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(device_index)
        except Exception:  # no nvidia-ml-py or no driver: nvidia-smi below, if it exists
            self.nvml = None

    def _read(self) -> tuple[float, float] | None:
        if self.nvml is not None:
            return (self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu,
                    self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**30)
        try:
            out = subprocess.run(["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
            util, mem_mib = (float(v) for v in out.stdout.strip().split(","))
            return util, mem_mib / 1024
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return None

    def run(self) -> None:
        while not self.stop.wait(0.2):
            reading = self._read()
            if reading is None:
                return
            self.util.append(reading[0])
            self.mem_gib.append(reading[1])

    def summary(self) -> dict:
        if not self.util:
            return {"gpu_util_pct": None, "gpu_mem_used_gib": None}
        return {"gpu_util_pct": {"mean": round(statistics.mean(self.util), 1), "max": max(self.util)},
                "gpu_mem_used_gib": {"mean": round(statistics.mean(self.mem_gib), 2), "max": round(max(self.mem_gib), 2)}}


def measure_packed(k: int, args: dict) -> dict:
    """K trial processes side by side for the window: their steps, images per second and NVML figures."""
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    barrier, results = ctx.Barrier(k + 1), ctx.Queue()
    procs = [ctx.Process(target=_trial, args=(i, {**args, "k": k}, barrier, results)) for i in range(k)]
    for p in procs:
        p.start()
    barrier.wait(timeout=args["start_timeout"])  # every trial has warmed up
    sampler = _NvmlSampler(torch.device(args["device"]).index or 0) if args["device"].startswith("cuda") else None
    if sampler is not None:
        sampler.start()
    runs = [results.get(timeout=args["seconds"] + args["start_timeout"]) for _ in range(k)]
    if sampler is not None:
        sampler.stop.set()
        sampler.join()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a packed trial exited with {p.exitcode} (K = {k})")
    img_per_s = sum(r["steps"] * args["batch"] / r["seconds"] for r in runs)
    return {"trials": k, "steps_per_trial": sorted(r["steps"] for r in runs), "img_per_s": round(img_per_s, 2),
            **(sampler.summary() if sampler is not None else {"gpu_util_pct": None, "gpu_mem_used_gib": None})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profiles", default="small,paper")
    p.add_argument("--trials", default="1,2,4,8,16", help="trials per device, comma-separated")
    p.add_argument("--seconds", type=float, default=60.0, help="measured window per K")
    p.add_argument("--warmup", type=int, default=3, help="steps before the window (compilation happens here)")
    p.add_argument("--stage", type=int, default=1, choices=[1, 2])
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--compile", default="none", choices=COMPILE_MODES)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--threads-per-trial", type=int, default=1)
    p.add_argument("--start-timeout", type=float, default=600.0, help="seconds for K trials to start and warm up")
    args = p.parse_args(argv)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda:0" if cuda else "cpu"
    bf16 = args.precision == "bf16" or (args.precision == "auto" and cuda)
    peak_dtype = torch.bfloat16 if bf16 else torch.float32
    peak = matmul_peak_gflops(torch.device(device), peak_dtype)
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "torch": torch.__version__, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
                          "matmul_peak": {"dtype": str(peak_dtype).removeprefix("torch."), "gflop_per_s": round(peak, 1)}},
              "stage": args.stage, "precision": args.precision, "compile": args.compile, "seconds": args.seconds,
              "results": {}}
    for profile in args.profiles.split(","):
        batch = BATCH[profile][args.stage]
        gflop_per_image = flop_per_step(profile, args.stage, batch) / batch / 1e9
        rows, base = [], None
        for k in map(int, args.trials.split(",")):
            row = measure_packed(k, dict(profile=profile, stage=args.stage, precision=args.precision,
                                         compile=args.compile, device=device, batch=batch, seconds=args.seconds,
                                         warmup=args.warmup, threads=args.threads_per_trial,
                                         start_timeout=args.start_timeout))
            row["trial_epochs_per_device_hour"] = round(row["img_per_s"] * 3600 / EPOCH_IMAGES[profile], 1)
            base = base or row["trial_epochs_per_device_hour"]
            row["speedup"] = round(row["trial_epochs_per_device_hour"] / base, 2)
            row["share_of_peak"] = round(row["img_per_s"] * gflop_per_image / peak, 4)
            print(f"{profile} K={k}: {row}", file=sys.stderr, flush=True)
            rows.append(row)
        report["results"][profile] = {"batch": batch, "gflop_per_image_step": round(gflop_per_image, 3), "packed": rows}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
