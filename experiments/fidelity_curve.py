"""Caption fidelity against training steps for Stage-I of a shapes sweep file, without Ray.

    python -m experiments.fidelity_curve [--sweep search_spaces/shapes.yaml] [--storage runs]
                                        [--steps 6000] [--every 1000] [--seconds S] [--batch-size B]
                                        [--param NAME=VALUE]
                                        [--device auto|cpu|cuda]

The same StageLoop, data and judge as harness/train.py, in one process, so a long curve is cheap on
a GPU. Prints one JSON line per evaluation (step, seconds, per-attribute fidelity, FID in the judge's
space), then the chance levels. The dataset is built under <storage>/datasets/ if missing.
"""

from __future__ import annotations

import argparse
import json
import sys

from experiments import shapes_setup
from harness.evaluate import chance_fidelity, shapes_metrics
from harness.loop import StageLoop


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shapes_setup.add_arguments(p)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--every", type=int, default=1000, help="evaluate every N steps")
    shapes_setup.add_stage1_arguments(p)
    p.add_argument("--seconds", type=float, default=float("inf"), help="stop after this wall time")
    args = p.parse_args()
    s = shapes_setup.load(p, args)
    data, evals, judge = s.data, s.evals, s.judge
    spec = shapes_setup.stage1_spec(p, s, args.param, args.batch_size)
    loop = StageLoop(spec, data.text_dim, 0, s.device)

    def evaluate(step: int, epoch: int, seconds: float) -> None:
        fake, _ = loop.sample(evals.text_BD)
        m = shapes_metrics(judge, fake, evals)
        print(json.dumps({"step": step, "epoch": epoch, "seconds": round(seconds, 1),
                          **{k: round(v, 3) for k, v in m.items()}}), flush=True)

    shapes_setup.train_until(data, spec.train.batch_size, args.steps, args.seconds, args.every,
                             loop.train_step, evaluate, loop.end_epoch)
    print(json.dumps({"chance": {k: round(v, 4) for k, v in chance_fidelity().items()}, "device": str(s.device)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
