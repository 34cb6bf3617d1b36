"""Why does a shapes attribute stay at chance? Probes of Stage-I that take G and D apart, without Ray.

    python -m experiments.attribute_probe --probe gan|d-supervised|g-judge
                                         [--sweep search_spaces/shapes.yaml] [--storage runs]
                                         [--steps 4000] [--every 1000] [--seconds S] [--batch-size B]
                                         [--attribute shape] [--param NAME=VALUE] [--device auto|cpu|cuda]

- ``gan``: Stage-I trained as harness/train.py trains it (the sweep's defaults). Each evaluation
  reports the judge's caption fidelity and, per attribute, how D scores held-out real images with
  their own caption against the same caption with that attribute's value changed: the mean logit
  gap and the share of images where D prefers the true caption (0.5 = D does not check it).
- ``d-supervised``: only the profile's Stage-I discriminator, trained directly on that contrast for
  ``--attribute`` (real image with its caption -> 1, with the attribute changed -> 0). Can the
  architecture learn to check the attribute at all, and how fast?
- ``g-judge``: only the profile's Stage-I generator, trained against the frozen judge (cross-entropy
  on every attribute, plus the KL term) instead of against D. Can G draw the attribute when its
  critic can see it?

The contrasting captions are shapes.canonical_caption: one template, each value's first word, so
a pair differs only in the changed value's words. Prints one JSON line per evaluation.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

import numpy as np
import torch
from torch import nn

from experiments import shapes_setup
from harness.data import shapes
from harness.data.text import get_encoder
from harness.evaluate import shapes_metrics
from harness.loop import StageLoop, build_profile
from models import Stage1Discriminator, Stage1Generator
from models.losses import kl_loss

PROBES = ("gan", "d-supervised", "g-judge")


class ContrastCaptions:
    """Sentence embeddings (normalised as the training data's) of canonical captions, true or with one
    attribute changed to another value drawn from ``rng``; cached per caption."""

    def __init__(self, data, seed: int) -> None:
        self.encoder, self.norm = get_encoder(data.encoder), data.norm
        self.rng = np.random.default_rng(seed)
        self.cache: dict[str, torch.Tensor] = {}

    def _embed(self, captions: list[str]) -> torch.Tensor:
        missing = sorted({c for c in captions if c not in self.cache})
        if missing:
            rows = self.norm(torch.from_numpy(self.encoder.encode_sentences(missing)))
            self.cache.update(zip(missing, rows))
        return torch.stack([self.cache[c] for c in captions])

    def pair(self, attribute_sets: list[dict[str, str]], attribute: str) -> tuple[torch.Tensor, torch.Tensor]:
        true, changed = [], []
        for attrs in attribute_sets:
            others = [v for v in shapes.ATTRIBUTE_VALUES[attribute] if v != attrs[attribute]]
            true.append(shapes.canonical_caption(attrs))
            changed.append(shapes.canonical_caption({**attrs, attribute: others[self.rng.integers(len(others))]}))
        return self._embed(true), self._embed(changed)


def heldout_attributes(evals) -> list[dict[str, str]]:
    return [
        {a: shapes.ATTRIBUTE_VALUES[a][int(evals.attributes[a][i])] for a in shapes.ATTRIBUTES}
        for i in range(len(evals.captions))
    ]


@torch.no_grad()
def logit_gap(d: Stage1Discriminator, real: torch.Tensor, true_text: torch.Tensor, changed_text: torch.Tensor) -> dict:
    d.eval()
    feat = d.features(real)
    gap = d.conditional(feat, true_text) - d.conditional(feat, changed_text)
    d.train()
    return {"gap": round(float(gap.mean()), 3), "prefers_true": round(float((gap > 0).float().mean()), 3)}


def _fidelity(judge, fake: torch.Tensor, evals) -> dict:
    return {k: round(v, 3) for k, v in shapes_metrics(judge, fake.float().cpu(), evals).items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shapes_setup.add_arguments(p)
    p.add_argument("--probe", required=True, choices=PROBES)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--every", type=int, default=1000, help="evaluate every N steps")
    p.add_argument("--seconds", type=float, default=float("inf"), help="stop after this wall time")
    p.add_argument("--attribute", default="shape", choices=shapes.ATTRIBUTES, help="d-supervised: the attribute to contrast")
    shapes_setup.add_stage1_arguments(p)
    args = p.parse_args()
    s = shapes_setup.load(p, args)
    spec = shapes_setup.stage1_spec(p, s, args.param, args.batch_size)
    device, evals = s.device, s.evals
    contrast = ContrastCaptions(s.data, spec.train.seed)
    heldout = heldout_attributes(evals)
    real = evals.real_images_B3HW.to(device)
    probe_pairs = {a: tuple(t.to(device) for t in contrast.pair(heldout, a)) for a in shapes.ATTRIBUTES}
    torch.manual_seed(spec.train.seed)

    end_epoch = lambda: None  # noqa: E731  (only the GAN's learning rates decay per epoch)
    if args.probe == "gan":
        loop = StageLoop(spec, s.data.text_dim, 0, device)
        end_epoch = loop.end_epoch

        def step(batch):
            loop.train_step(batch)

        def report():
            fake, _ = loop.sample(evals.text_BD)
            return {**_fidelity(s.judge, fake, evals),
                    "d_checks": {a: logit_gap(loop.d, real, *probe_pairs[a]) for a in shapes.ATTRIBUTES}}
    elif args.probe == "d-supervised":
        d = Stage1Discriminator(build_profile(spec, s.data.text_dim, 0).stage1).to(device)
        opt = torch.optim.Adam(d.parameters(), lr=spec.hparams.lr_d, betas=(0.5, 0.999))
        bce = nn.BCEWithLogitsLoss()

        def step(batch):
            attrs = [shapes.attributes_of_key(int(k)) for k in batch.keys_B]
            true_text, changed_text = (t.to(device) for t in contrast.pair(attrs, args.attribute))
            out = d(batch.images_B3HW.to(device), true_text, changed_text)
            loss = bce(out.matching_B, torch.ones_like(out.matching_B)) \
                + bce(out.mismatched_B, torch.zeros_like(out.mismatched_B))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def report():
            return {"attribute": args.attribute, "d_checks": logit_gap(d, real, *probe_pairs[args.attribute])}
    else:  # g-judge
        profile = build_profile(spec, s.data.text_dim, 0).stage1
        g = Stage1Generator(profile).to(device)
        critic = copy.deepcopy(s.judge).to(device).eval().requires_grad_(False)  # s.judge stays on the CPU to score
        opt = torch.optim.Adam(g.parameters(), lr=spec.hparams.lr_g, betas=(0.5, 0.999))
        names = shapes.ATTRIBUTES

        def step(batch):
            attrs = [shapes.attributes_of_key(int(k)) for k in batch.keys_B]
            target = {a: torch.tensor([shapes.ATTRIBUTE_VALUES[a].index(x[a]) for x in attrs], device=device) for a in names}
            text = batch.text_BD.to(device)
            fake, mu, logvar = g(text, torch.randn(text.shape[0], profile.z_dim, device=device))
            logits = critic(fake)
            loss = sum(nn.functional.cross_entropy(logits[a], target[a]) for a in names)
            loss = loss + spec.hparams.kl_weight * kl_loss(mu, logvar)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        @torch.no_grad()
        def report():
            g.eval()
            gen = torch.Generator(device="cpu").manual_seed(1234)  # fixed noise: every evaluation alike
            z = torch.randn(len(evals.captions), profile.z_dim, generator=gen).to(device)
            eps = torch.randn(len(evals.captions), profile.c_dim, generator=gen).to(device)
            fake, _, _ = g(evals.text_BD.to(device), z, eps)
            g.train()
            return _fidelity(s.judge, fake, evals)

    def evaluate(step_n: int, epoch: int, seconds: float) -> None:
        print(json.dumps({"probe": args.probe, "step": step_n, "seconds": round(seconds, 1), **report()}), flush=True)

    shapes_setup.train_until(s.data, spec.train.batch_size, args.steps, args.seconds, args.every, step, evaluate, end_epoch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
