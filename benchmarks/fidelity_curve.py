"""Caption fidelity against training steps for Stage-I of a shapes sweep file, without Ray.

    python benchmarks/fidelity_curve.py [--sweep search_spaces/shapes.yaml] [--storage runs]
                                        [--steps 6000] [--every 1000] [--seconds S] [--batch-size B]
                                        [--param NAME=VALUE]
                                        [--device auto|cpu|cuda]

The same StageLoop, data and judge as harness/train.py, in one process, so a long curve is cheap on
a GPU. Prints one JSON line per evaluation (step, seconds, per-attribute fidelity, FID in the judge's
space), then the chance levels. The dataset is built under <storage>/datasets/ if missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


import shapes_setup  # noqa: E402
from harness.config import StageRunConfig  # noqa: E402
from harness.evaluate import chance_fidelity, shapes_metrics  # noqa: E402
from harness.loop import StageLoop  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shapes_setup.add_arguments(p)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--every", type=int, default=1000, help="evaluate every N steps")
    p.add_argument("--batch-size", type=int, help="override the sweep's train.batch_size")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a Stage-I searched value's default, e.g. kl_weight=0.1 (repeatable)")
    p.add_argument("--seconds", type=float, default=float("inf"), help="stop after this wall time")
    args = p.parse_args()
    s = shapes_setup.load(p, args)
    data, evals, judge = s.data, s.evals, s.judge
    params = shapes_setup.parse_params(p, s.sweep, args.param)
    run = StageRunConfig.from_sweep(s.sweep, 1, "-", data.uri, epochs=0, params=params)
    if args.batch_size:
        run = dataclasses.replace(run, train=dataclasses.replace(run.train, batch_size=args.batch_size))
    loop = StageLoop(run, data.text_dim, 0, s.device)
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
    print(json.dumps({"chance": {k: round(v, 4) for k, v in chance_fidelity().items()}, "device": str(s.device)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
