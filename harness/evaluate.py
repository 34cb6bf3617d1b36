"""Evaluation of generated images: FID, caption fidelity, Inception Score, sample grids.

- shapes: FID in the judge's 128-d feature space, and caption fidelity: the share of generated
  images whose judged attribute matches the caption's (per attribute, and all attributes at once),
  shown beside chance.
- real datasets: FID, KID and Inception Score from the standard FID Inception (or a TorchScript network),
  harness/metrics/; no package ships its weights, so the user names the file (data.inception_weights).
"""

from __future__ import annotations

import io
import textwrap

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from harness.data import shapes
from harness.data.dataset import EvalSet
from harness.data.text import tokenize
from harness.metrics.distances import frechet_distance, kernel_inception_distance
from harness.metrics.image_sets import pool_and_is_logits, quantise, scores
from harness.metrics.inception import ScoringNet


def judge_features(judge, images: torch.Tensor) -> np.ndarray:
    """The judge's features of ``images`` as float64 (FID's and KID's matrix products want the precision)."""
    return judge.judge(images)[0].numpy().astype(np.float64)


def caption_fidelity(judge, images: torch.Tensor, eval_set: EvalSet) -> dict[str, float]:
    """Per attribute: share of images whose judged value matches the caption (where it names it)."""
    return _fidelity(judge.predict(images), eval_set)


def _fidelity(pred: dict[str, torch.Tensor], eval_set: EvalSet) -> dict[str, float]:
    correct_all = torch.ones(len(eval_set.mentions_B), dtype=torch.bool)
    out = {}
    for k, name in enumerate(shapes.ATTRIBUTES):
        named = (eval_set.mentions_B >> k) & 1 == 1
        hit = pred[name] == eval_set.attributes[name]
        correct_all &= hit | ~named
        out[f"fidelity_{name}"] = float(hit[named].float().mean()) if named.any() else float("nan")
    out["fidelity"] = float(correct_all.float().mean())
    out["conditioning"] = conditioning(out)
    return out


def conditioning(fidelity: dict[str, float]) -> float:
    """How far above chance the images follow their captions, 0 at chance and 1 when every named attribute is
    right: each attribute's fidelity as a share of the way from chance to 1, averaged over the attributes.
    Judge-FID cannot see this (experiments/fid_conditioning.py: shuffled captions keep FID 0); all-attributes
    fidelity stays at 0 until a run draws every attribute of one image right."""
    chance = chance_fidelity()
    lifts = [(fidelity[k] - chance[k]) / (1.0 - chance[k]) for k in chance if k != "fidelity"
             and not np.isnan(fidelity.get(k, float("nan")))]
    return float(np.mean(lifts)) if lifts else float("nan")


def chance_fidelity() -> dict[str, float]:
    chance = {f"fidelity_{a}": 1.0 / len(v) for a, v in shapes.ATTRIBUTE_VALUES.items()}
    chance["fidelity"] = float(np.prod(list(chance.values())))
    return chance


def shapes_metrics(judge, fake: torch.Tensor, eval_set: EvalSet, real_features: np.ndarray | None = None) -> dict[str, float]:
    """Caption fidelity, and FID and KID in the judge's feature space against ``real_features`` (the real
    images' judge_features: a run computes them once, they do not change between evaluations), by default
    the eval set's real images'. One judge pass over the fakes gives both the features and the predictions."""
    fake_f, pred = judge.judge(fake)
    fake_f = fake_f.numpy().astype(np.float64)
    real_f = judge_features(judge, eval_set.real_images_B3HW) if real_features is None else real_features
    metrics = _fidelity(pred, eval_set)
    metrics["fid"] = frechet_distance(fake_f, real_f)
    metrics["kid"], metrics["kid_std"] = kernel_inception_distance(fake_f, real_f)
    return metrics


def inception_metrics(net: ScoringNet, fake: torch.Tensor, real_pool: np.ndarray,
                      classifier: ScoringNet | None = None) -> dict[str, float]:
    """FID, KID and IS of generated images (in [-1, 1]) against the real images' pool features (a run computes
    them once). The fakes are quantised to uint8 first, as the real images are. IS takes ``classifier``'s
    logits when the sweep names one (data.is_classifier), else the FID network's."""
    fake_pool, logits = pool_and_is_logits(net, classifier, quantise(fake))
    return scores(fake_pool, real_pool, logits)


def _to_uint8(img_3HW: torch.Tensor) -> np.ndarray:
    return quantise(img_3HW).permute(1, 2, 0).numpy()


def sample_grid(images: torch.Tensor, captions: list[str], attention: torch.Tensor | None = None,
                columns: int = 8, cell: int = 128) -> bytes:
    """PNG: each image with its caption beneath; with attention, a row of per-word maps under it, each
    labelled with its word (the caption's first four words, in the order the model reads them)."""
    n = len(images)
    rows = (n + columns - 1) // columns
    text_h = 44
    attn_h = cell // 4 if attention is not None else 0
    grid = Image.new("RGB", (columns * cell, rows * (cell + text_h + attn_h)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i in range(n):
        x, y = (i % columns) * cell, (i // columns) * (cell + text_h + attn_h)
        img = Image.fromarray(_to_uint8(images[i])).resize((cell, cell), Image.Resampling.NEAREST)
        grid.paste(img, (x, y))
        for j, line in enumerate(textwrap.wrap(captions[i], width=cell // 6)[:4]):
            draw.text((x + 2, y + cell + 1 + 10 * j), line, fill=(0, 0, 0), font=font)
        if attention is not None:
            maps, words = attention[i], tokenize(captions[i])
            for w in range(min(4, maps.shape[0], len(words))):
                m = maps[w]
                m = (m / (m.max() + 1e-8) * 255).byte().numpy()
                tile = Image.fromarray(m).resize((cell // 4, cell // 4), Image.Resampling.NEAREST).convert("RGB")
                ImageDraw.Draw(tile).text((1, 0), words[w][:5], fill=(255, 64, 64), font=font)
                grid.paste(tile, (x + w * cell // 4, y + cell + text_h))
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return buf.getvalue()
