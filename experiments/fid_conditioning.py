"""Does judge-FID see whether images match their captions? Scores stand-in generators whose quality is known.

    python -m experiments.fid_conditioning [--sweep search_spaces/shapes.yaml] [--storage runs] [--n 256]

FID and KID compare two sets of images, ignoring which caption each image was drawn for; caption fidelity
asks the judge whether each image shows its own caption. Three stand-ins for a generator, each scored as
the harness scores a run (harness/evaluate.py shapes_metrics against the held-out real images of the
evaluation captions), at the profile's Stage-I and Stage-II sizes:

- ``real``: the held-out real image of each caption (a perfect generator);
- ``real, captions shuffled``: the same images, each paired with another image's caption (realistic images
  that ignore their captions: the same set, so the same FID);
- ``other scenes``: real training images of other scenes (realistic, not conditioned).

Prints one JSON line per stand-in and size.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from experiments import shapes_setup
from harness.config import load_sweep
from harness.evaluate import judge_features, shapes_metrics
from models.config import get_profile


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shapes_setup.add_arguments(p)
    p.add_argument("--n", type=int, default=256, help="evaluation captions (default 256, the demo's eval_samples)")
    args = p.parse_args(argv)
    profile = get_profile(load_sweep(args.sweep).model.profile)
    for stage, resolution in ((1, profile.stage1.image_size), (2, profile.stage2.image_size)):
        setup = shapes_setup.load(p, args, resolution)
        evals = setup.data.eval_set(args.n, resolution)
        reals = evals.real_images_B3HW
        reference = judge_features(setup.judge, reals)  # what every evaluation compares against
        pick = np.random.default_rng(0).choice(len(setup.data.images), len(reals), replace=False)
        stand_ins = {"real": reals, "real, captions shuffled": reals.roll(1, 0),
                     "other scenes": torch.from_numpy(setup.data.images[pick]).float().div(127.5).sub(1.0)}
        for name, images in stand_ins.items():
            m = shapes_metrics(setup.judge, images, evals, reference)
            print(json.dumps({"stand_in": name, "stage": stage, "px": resolution, "n": len(reals),
                              "fid": round(m["fid"], 2), "kid": round(m["kid"], 4), "fidelity": round(m["fidelity"], 3),
                              **{k: round(v, 3) for k, v in m.items() if k.startswith("fidelity_")}}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
