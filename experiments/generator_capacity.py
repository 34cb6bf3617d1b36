"""Can a profile's Stage-I generator draw every shapes attribute at all? A supervised probe, no GAN.

    python -m experiments.generator_capacity [--sweep search_spaces/shapes.yaml] [--storage runs]
                                            [--steps 4000] [--every 500] [--ngf N] [--image-size PX]
                                            [--device auto|cpu|cuda]

The generator of the sweep's profile (its Stage-I defaults for z_dim and c_dim, ``--ngf`` to try
another width) is trained by regression: the caption that names every attribute, zero noise and the
CA mean in, the real image out, L1 weighted 20x on object pixels (the object covers a few percent of
the image, and plain L1 learns only the background). Every ``--every`` steps the judge scores its
images as in training. An attribute this probe cannot reach in N steps is not a GAN problem: the
architecture cannot draw it that fast. Prints one JSON line per evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import torch

from experiments import shapes_setup
from harness.evaluate import shapes_metrics
from harness.loop import build_profile
from models import Stage1Generator

OBJECT_WEIGHT = 20.0
FULL_CAPTION = 0  # caption 0 of every scene names all five attributes (harness/data/shapes.py)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shapes_setup.add_arguments(p)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--every", type=int, default=500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--ngf", type=int, help="generator width (default: the profile's)")
    p.add_argument("--image-size", type=int, help="output side (default: the profile's; the dataset must hold it)")
    args = p.parse_args()
    s = shapes_setup.load(p, args, args.image_size)
    sweep, device, data, evals, judge = s.sweep, s.device, s.data, s.evals, s.judge
    base = build_profile(shapes_setup.stage1_spec(p, s), data.text_dim, 0).stage1  # the sweep's Stage-I defaults
    cfg = dataclasses.replace(base, ngf=args.ngf or base.ngf, image_size=args.image_size or base.image_size)
    g = Stage1Generator(cfg).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(sweep.train.seed)

    def draw(text: torch.Tensor) -> torch.Tensor:
        n = text.shape[0]
        zeros = lambda d: torch.zeros(n, d, device=device)  # noqa: E731
        return g(text.to(device), zeros(cfg.z_dim), zeros(cfg.c_dim))[0]

    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        g.train()
        idx = torch.randint(len(data.images), (args.batch,), generator=gen)
        real = torch.from_numpy(data.images[idx.numpy()]).float().div_(127.5).sub_(1.0).to(device)
        on_object = ((real - real[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.2).float()  # differs from the corner
        loss = ((draw(data.embeddings[idx, FULL_CAPTION]) - real).abs() * (1 + OBJECT_WEIGHT * on_object)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.every == 0 or step == args.steps:
            g.eval()
            with torch.no_grad():
                fake = draw(evals.text_BD).float().cpu()
            m = shapes_metrics(judge, fake, evals)
            fidelity = {k: round(v, 3) for k, v in m.items() if k.startswith("fidelity")}
            print(json.dumps({"step": step, "seconds": round(time.perf_counter() - t0, 1), "loss": round(loss.item(), 4),
                              "ngf": cfg.ngf, "image_size": cfg.image_size, **fidelity}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
