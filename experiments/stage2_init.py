"""Stage-II from scratch (the paper) against Stage-II as a residual on its parent, at equal steps, without Ray.

    python -m experiments.stage2_init [--sweep search_spaces/shapes.yaml] [--storage runs]
        [--stage1-steps 3000 | --stage1-checkpoint URI] [--steps 450,900,1800] [--seeds 3]
        [--inits scratch,residual] [--param NAME=VALUE] [--device auto|cpu|cuda]

Trains one Stage-I generator with the sweep's defaults (its training seed), or loads one from a sweep's
checkpoint, scores it at the Stage-I size, then trains Stage-II on top of it with each ``--inits`` value
and each of ``--seeds`` training seeds (Stage-II's defaults with ``--param`` items applied), scoring every
run at each step of ``--steps`` (0: before any Stage-II step) on the same held-out captions at the
Stage-II size: caption fidelity per attribute and judge-FID. The same StageLoop, data and judge as
harness/train.py. Prints JSON lines: the parent, each evaluation, then the mean and sd per init and step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys

from experiments import shapes_setup
from harness.data.dataset import ShapesData
from harness.evaluate import shapes_metrics
from harness.hyperparams import from_sampled
from harness.loop import LoopSpec, StageLoop
from harness.worker import load_stage1_generator
from models.config import STAGE2_INITS, get_profile

KEYS = ("fid", "fidelity", "fidelity_shape", "fidelity_colour", "fidelity_size", "fidelity_position",
        "fidelity_background")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shapes_setup.add_arguments(p)
    p.add_argument("--stage1-steps", type=int, default=3000)
    p.add_argument("--steps", default="450,900,1800", help="Stage-II steps at which every run is scored")
    p.add_argument("--seeds", type=int, default=3, help="Stage-II training seeds per init")
    p.add_argument("--inits", default=",".join(STAGE2_INITS))
    p.add_argument("--stage1-checkpoint", help="a Stage-I checkpoint URI to refine instead of training a parent")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a Stage-II hyperparameter")
    args = p.parse_args(argv)
    steps = sorted({int(s) for s in args.steps.split(",")})
    inits = [i for i in args.inits.split(",") if i]
    if any(i not in STAGE2_INITS for i in inits):
        p.error(f"--inits: each must be one of {', '.join(STAGE2_INITS)}")
    s = shapes_setup.load(p, args)
    sweep, judge = s.sweep, s.judge

    # The parent: Stage-I with the sweep's defaults, or a checkpoint's generator.
    spec1 = LoopSpec.from_sweep(sweep, from_sampled(1, sweep.defaults(1)))
    stage1 = StageLoop(spec1, s.data.text_dim, 0, s.device)
    if args.stage1_checkpoint:
        stage1.g = load_stage1_generator(args.stage1_checkpoint).to(s.device)
        stage1.profile = dataclasses.replace(stage1.profile, stage1=stage1.g.cfg)  # its noise size, not the sweep's
    else:
        shapes_setup.train_until(s.data, spec1.train.batch_size, args.stage1_steps, float("inf"), args.stage1_steps,
                                 stage1.train_step, lambda *a: None, stage1.end_epoch)
    fake, _ = stage1.sample(s.evals.text_BD)
    parent = {k: round(v, 4) for k, v in shapes_metrics(judge, fake, s.evals).items() if k in KEYS}
    origin = {"stage1_checkpoint": args.stage1_checkpoint} if args.stage1_checkpoint else {"stage1_steps": args.stage1_steps}
    print(json.dumps({"parent": parent, **origin, "device": str(s.device)}), flush=True)

    size2 = get_profile(sweep.model.profile).stage2.image_size
    data2 = ShapesData(s.data.uri, sweep.data.encoder, size2, seed=sweep.train.seed, text_norm=sweep.data.text_norm)
    evals2 = data2.eval_set(sweep.data.eval_samples, size2)
    results: dict[tuple[str, int], list[dict]] = {}
    for init in inits:
        for seed in range(1, args.seeds + 1):
            hp = dataclasses.replace(shapes_setup.stage_hparams(p, sweep, 2, args.param), stage2_init=init)
            spec2 = LoopSpec.from_sweep(sweep, hp, dataclasses.replace(sweep.train, seed=seed))
            loop = StageLoop(spec2, data2.text_dim, 0, s.device, stage1.g)

            def evaluate(step: int, epoch: int, seconds: float, loop=loop, init=init, seed=seed) -> None:
                if step not in steps:
                    return
                fake2, _ = loop.sample(evals2.text_BD)
                m = {k: round(v, 4) for k, v in shapes_metrics(judge, fake2, evals2).items() if k in KEYS}
                results.setdefault((init, step), []).append(m)
                print(json.dumps({"init": init, "seed": seed, "step": step, "seconds": round(seconds, 1), **m}),
                      flush=True)

            if 0 in steps:  # the untrained Stage-II: with residual, exactly the upsampled parent
                evaluate(0, 0, 0.0)
            trained = [n for n in steps if n > 0]
            if trained:
                shapes_setup.train_until(data2, spec2.train.batch_size, trained[-1], float("inf"), _gcd(trained),
                                         loop.train_step, evaluate, loop.end_epoch)
    for (init, step), ms in sorted(results.items()):
        print(json.dumps({"summary": init, "step": step, "runs": len(ms),
                          **{k: [round(statistics.mean(m[k] for m in ms), 4),
                                 round(statistics.stdev(m[k] for m in ms), 4) if len(ms) > 1 else None] for k in KEYS}}))
    return 0


def _gcd(values: list[int]) -> int:
    import math

    out = 0
    for v in values:
        out = math.gcd(out, v)
    return out


if __name__ == "__main__":
    sys.exit(main())
