"""Seconds per 1,000 images through the standard FID Inception (299 px, TF1 resize, pool + logits).

    python benchmarks/inception_throughput.py [--images 100] [--size 256] [--batch 50] [--device cpu|cuda]
                                              [--threads N]

Random weights in the standard layout (the real file is not shipped; the arithmetic is the same), uint8
images of ``--size`` px. Prints one JSON line: the CPU model, threads, images, seconds and seconds per 1,000.
The final evaluation of a CUB sweep scores 29,330 generated images per run plus the 2,933 test images once.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time

import torch

from harness.metrics.image_sets import features
from harness.metrics.inception import FIDInceptionV3, ScoringNet


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--size", type=int, default=256, help="image side before the resize to 299 (StackGAN: 256)")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net = ScoringNet(FIDInceptionV3().eval().to(device), "standard", "random weights", device)
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8)
    features(net, images[: min(args.batch, args.images)], args.batch)  # warm-up: first-call allocations
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    features(net, images, args.batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    print(json.dumps({"cpu": cpu_model(), "device": str(device), "threads": args.threads, "images": args.images,
                      "size": args.size, "batch": args.batch, "seconds": round(seconds, 2),
                      "seconds_per_1000": round(1000 * seconds / args.images, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
