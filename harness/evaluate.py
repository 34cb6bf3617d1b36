"""Evaluation of generated images: FID, caption fidelity, Inception Score, sample grids.

- shapes: FID in the judge's 128-d feature space, and caption fidelity: the share of generated
  images whose judged attribute matches the caption's (per attribute, and all attributes at once),
  shown beside chance.
- real datasets: FID (pool features) and Inception Score (logits) from an Inception network given
  as a TorchScript file (local path or URI) returning ``(pool_features_BF, logits_BK)``; no package
  ships those weights, so the user supplies them.
"""

from __future__ import annotations

import io
import textwrap

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from harness import storage
from harness.data import shapes
from harness.data.dataset import EvalSet
from harness.data.text import tokenize


def frechet_distance(feat_a: np.ndarray, feat_b: np.ndarray) -> float:
    """FID between two feature sets (N x F): |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2).

    Tr((S_a S_b)^1/2) is computed as the sum of sqrt eigenvalues of S_a^1/2 S_b S_a^1/2, which is
    symmetric PSD, so no complex sqrtm is needed.
    """
    mu_a, mu_b = feat_a.mean(0), feat_b.mean(0)
    s_a, s_b = np.cov(feat_a, rowvar=False), np.cov(feat_b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = sqrt_a @ s_b @ sqrt_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_sqrt)


KID_SUBSETS = 100  # torch-fidelity's default
KID_SUBSET_SIZE = 1000  # torch-fidelity's default; smaller sets use half their size (see kernel_inception_distance)


def polynomial_mmd2(feat_x: np.ndarray, feat_y: np.ndarray) -> float:
    """The unbiased squared MMD between two feature sets (m x F, n x F) with KID's kernel
    k(a, b) = (a . b / F + 1)^3 (Binkowski et al., ICLR 2018): the mean of k within each set, diagonal
    left out, minus twice the mean across. Unbiased, so it can be slightly negative."""
    d = feat_x.shape[1]
    k_xx = (feat_x @ feat_x.T / d + 1) ** 3
    k_yy = (feat_y @ feat_y.T / d + 1) ** 3
    k_xy = (feat_x @ feat_y.T / d + 1) ** 3
    m, n = len(feat_x), len(feat_y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def kernel_inception_distance(feat_fake: np.ndarray, feat_real: np.ndarray, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """KID's (mean, sd) over ``subsets`` random subsets drawn without replacement from each set, as
    torch-fidelity computes it. Sets smaller than ``subset_size`` use subsets of half the smaller set, so the
    subsets still differ and the sd says something (at the full set every subset would be the same)."""
    size = min(subset_size, len(feat_fake), len(feat_real))
    if size == min(len(feat_fake), len(feat_real)):
        size = max(2, size // 2)
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd2(feat_fake[rng.choice(len(feat_fake), size, replace=False)],
                              feat_real[rng.choice(len(feat_real), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


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


def load_inception(uri: str) -> torch.jit.ScriptModule:
    return torch.jit.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu").eval()


@torch.no_grad()
def inception_metrics(inception, fake: torch.Tensor, real: torch.Tensor, splits: int = 10, batch: int = 64) -> dict:
    def run(images):
        feats, logits = [], []
        for i in range(0, len(images), batch):
            f, lg = inception(images[i : i + batch])
            feats.append(f.double())
            logits.append(lg.double())
        return torch.cat(feats).numpy(), torch.cat(logits)

    f_fake, logits = run(fake)
    f_real, _ = run(real)
    p = torch.softmax(logits, dim=1)
    scores = []
    for chunk in p.chunk(min(splits, len(p))):
        py = chunk.mean(0, keepdim=True)
        kl = (chunk * (torch.log(chunk + 1e-12) - torch.log(py + 1e-12))).sum(1).mean()
        scores.append(float(torch.exp(kl)))
    return {"fid": frechet_distance(f_fake, f_real), "inception_score": float(np.mean(scores)),
            "inception_score_std": float(np.std(scores))}


def _to_uint8(img_3HW: torch.Tensor) -> np.ndarray:
    return ((img_3HW.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


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
