"""Scores two image sets with the standard FID Inception, the way pytorch-fid and torch-fidelity do.

    python -m harness.metrics --input1 GENERATED --input2 REAL --inception-weights FILE [--fid] [--kid] [--isc]

INPUT is a folder of PNG/JPEG images (one size) or an .npz file of uint8 images. FILE is either standard
weights file (pytorch-fid's pt_inception-2015-12-05-6726825d.pth or torch-fidelity's
weights-inception-2015-12-05-6726825d.pth; read with weights_only=True) or a TorchScript network returning
(pool features, logits). With none of --fid/--kid/--isc, all three. IS is computed on --input1 (10 splits),
with --is-classifier's logits when given, else ImageNet's. Prints one JSON object with torch-fidelity's key
names; bad input gets one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from harness.errors import ConfigError, DataError, StorageError
from harness.metrics.image_sets import features, pool_and_is_logits, read_image_set, scores
from harness.metrics.inception import load_scoring_net

# The harness's metric names -> torch-fidelity's keys.
TORCH_FIDELITY_KEYS = {"fid": "frechet_inception_distance", "kid": "kernel_inception_distance_mean",
                       "kid_std": "kernel_inception_distance_std", "inception_score": "inception_score_mean",
                       "inception_score_std": "inception_score_std"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.metrics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input1", required=True, help="generated images: a folder of PNG/JPEG or an .npz file")
    p.add_argument("--input2", help="real images (needed for --fid and --kid)")
    p.add_argument("--inception-weights", required=True, help="standard FID Inception weights, or TorchScript")
    p.add_argument("--is-classifier", help="IS classifier in the standard layout, any class count (default: "
                                           "the FID Inception's ImageNet logits)")
    p.add_argument("--fid", action="store_true", help="Frechet Inception Distance")
    p.add_argument("--kid", action="store_true", help="Kernel Inception Distance (mean and sd over 100 subsets)")
    p.add_argument("--isc", action="store_true", help="Inception Score (mean and sd over 10 splits)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1...")
    p.add_argument("--batch-size", type=int, default=50)
    args = p.parse_args(argv)
    if not (args.fid or args.kid or args.isc):
        args.fid = args.kid = args.isc = True
    if (args.fid or args.kid) and not args.input2:
        p.error("--fid and --kid compare two sets: give --input2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = torch.device(args.device)
        net = load_scoring_net(args.inception_weights, "--inception-weights", device=device)
        classifier = (load_scoring_net(args.is_classifier, "--is-classifier", num_classes=None, device=device)
                      if args.is_classifier and args.isc else None)
        fake = read_image_set(args.input1)
        real = read_image_set(args.input2) if args.input2 and (args.fid or args.kid) else None
    except (ConfigError, DataError, StorageError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    fake_pool, fake_logits = pool_and_is_logits(net, classifier, fake, args.batch_size, "input1")
    real_pool = features(net, real, args.batch_size, "input2")[0] if real is not None else None
    result = scores(fake_pool, real_pool, fake_logits, fid=args.fid, kid=args.kid, isc=args.isc)
    print(f"scored {len(fake)} + {0 if real is None else len(real)} images in {time.perf_counter() - t0:.1f} s "
          f"with {net.describe()}", file=sys.stderr)
    print(json.dumps({TORCH_FIDELITY_KEYS[k]: v for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
