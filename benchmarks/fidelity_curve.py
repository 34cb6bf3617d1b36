"""Caption fidelity against training steps for Stage-I of a shapes sweep file, without Ray.

    python benchmarks/fidelity_curve.py [--sweep search_spaces/shapes.yaml] [--storage runs]
                                        [--steps 6000] [--every 1000] [--seconds S] [--device auto|cpu|cuda]

The same StageLoop, data and judge as harness/train.py, in one process, so a long curve is cheap on
a GPU. Prints one JSON line per evaluation (step, seconds, per-attribute fidelity, FID in the judge's
space), then the chance levels. The dataset is built under <storage>/datasets/ if missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from harness.config import StageRunConfig, load_sweep  # noqa: E402
from harness.data.dataset import ShapesData  # noqa: E402
from harness.data.ensure import ensure_dataset  # noqa: E402
from harness.data.judge import load_or_train_judge  # noqa: E402
from harness.evaluate import chance_fidelity, shapes_metrics  # noqa: E402
from harness.loop import StageLoop  # noqa: E402
from models.config import get_profile  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default="search_spaces/shapes.yaml", help="a shapes sweep file; its Stage-I defaults train")
    p.add_argument("--storage", default="runs", help="where the dataset lives or is built")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--every", type=int, default=1000, help="evaluate every N steps")
    p.add_argument("--seconds", type=float, default=float("inf"), help="stop after this wall time")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    sweep = load_sweep(args.sweep)
    if sweep.data.kind != "shapes":
        p.error(f"--sweep: data.kind is {sweep.data.kind!r}; fidelity needs the shapes dataset")
    uri = ensure_dataset(args.storage, sweep.data, sweep.model.profile, log=lambda m: print(m, file=sys.stderr))
    resolution = get_profile(sweep.model.profile).stage1.image_size
    data = ShapesData(uri, sweep.data.encoder, resolution, seed=sweep.train.seed, text_norm=sweep.data.text_norm)
    run = StageRunConfig.from_sweep(sweep, 1, "-", uri, epochs=0, params=sweep.defaults(1))
    loop = StageLoop(run, data.text_dim, 0, device)
    evals = data.eval_set(sweep.data.eval_samples, resolution)
    judge, _ = load_or_train_judge(uri, log=lambda m: print(m, file=sys.stderr))
    t0, step, epoch = time.perf_counter(), 0, 0
    while step < args.steps and time.perf_counter() - t0 < args.seconds:
        for batch in data.batches(run.train.batch_size, epoch):
            loop.train_step(batch)
            step += 1
            last = step >= args.steps or time.perf_counter() - t0 >= args.seconds
            if step % args.every == 0 or last:
                fake, _ = loop.sample(evals.text_BD)
                m = shapes_metrics(judge, fake, evals)
                print(json.dumps({"step": step, "epoch": epoch, "seconds": round(time.perf_counter() - t0, 1),
                                  **{k: round(v, 3) for k, v in m.items()}}), flush=True)
            if last:
                break
        epoch += 1
        loop.end_epoch()
    print(json.dumps({"chance": {k: round(v, 4) for k, v in chance_fidelity().items()}, "device": str(device)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
