"""FID, KID and Inception Score from features and logits: the formulas, with nothing about networks.

Shared by the shapes judge's scores (harness/evaluate.py) and the standard Inception's (harness/metrics/).
"""

from __future__ import annotations

import numpy as np
import torch

KID_SUBSETS = 100  # torch-fidelity's default
KID_SUBSET_SIZE = 1000  # torch-fidelity's default; smaller sets use half their size (see kernel_inception_distance)
IS_SPLITS = 10  # Salimans et al. 2016, and every StackGAN paper


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


def kid_subset_size(n_fake: int, n_real: int, subset_size: int = KID_SUBSET_SIZE) -> int:
    """torch-fidelity's subset size, or half the smaller set when a set is not larger than it: at the full
    set every subset would be the same and the sd would say nothing."""
    size = min(subset_size, n_fake, n_real)
    return max(2, size // 2) if size == min(n_fake, n_real) else size


def kernel_inception_distance(feat_fake: np.ndarray, feat_real: np.ndarray, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """KID's (mean, sd) over ``subsets`` random subsets drawn without replacement from each set, as
    torch-fidelity computes it, at ``kid_subset_size``."""
    size = kid_subset_size(len(feat_fake), len(feat_real), subset_size)
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd2(feat_fake[rng.choice(len(feat_fake), size, replace=False)],
                              feat_real[rng.choice(len(feat_real), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def inception_score(logits_BK: np.ndarray | torch.Tensor, splits: int = IS_SPLITS) -> tuple[float, float]:
    """IS's (mean, sd) over ``splits`` consecutive splits: exp of the mean KL(p(y|x) || p(y)), where p(y) is
    the split's marginal (Salimans et al. 2016). Fewer splits when there are fewer images than splits."""
    logits = torch.as_tensor(logits_BK, dtype=torch.float64)
    log_p = torch.log_softmax(logits, dim=1)
    scores = []
    for chunk in log_p.chunk(min(splits, len(log_p))):
        log_py = torch.logsumexp(chunk, dim=0) - np.log(len(chunk))  # the split's marginal, in log space
        kl = (chunk.exp() * (chunk - log_py)).sum(1).mean()
        scores.append(float(torch.exp(kl)))
    return float(np.mean(scores)), float(np.std(scores))
