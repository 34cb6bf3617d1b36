"""StackGAN losses: matching-aware discriminator loss, generator loss, KL, mismatched pairs.

Every adversarial loss has one signature, ``fn(logits_B, target_real, generator_step) -> scalar``,
and is chosen by name from ``ADVERSARIAL_LOSSES`` (compare_gan style): ``bce`` is the paper's,
``hinge`` a common alternative the sweeps may try.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F


def bce_loss(logits_B: torch.Tensor, target_real: bool, generator_step: bool) -> torch.Tensor:
    target = torch.ones_like(logits_B) if target_real else torch.zeros_like(logits_B)
    return F.binary_cross_entropy_with_logits(logits_B, target)


def hinge_loss(logits_B: torch.Tensor, target_real: bool, generator_step: bool) -> torch.Tensor:
    if generator_step:  # G maximises D's score of its images
        return -logits_B.mean()
    return F.relu(1.0 - logits_B).mean() if target_real else F.relu(1.0 + logits_B).mean()


AdversarialLoss = Callable[[torch.Tensor, bool, bool], torch.Tensor]
ADVERSARIAL_LOSSES: dict[str, AdversarialLoss] = {"bce": bce_loss, "hinge": hinge_loss}


def get_adversarial_loss(name: str) -> AdversarialLoss:
    if name not in ADVERSARIAL_LOSSES:
        raise ValueError(f"unknown adversarial loss {name!r}; choose from {sorted(ADVERSARIAL_LOSSES)}")
    return ADVERSARIAL_LOSSES[name]


@dataclasses.dataclass
class DiscriminatorLogits:
    """D's logits for the three matching-aware pairs (and the image-only head in Stage-II)."""

    real: torch.Tensor  # real image with its own caption -> real
    wrong: torch.Tensor  # real image with a mismatched caption -> fake
    fake: torch.Tensor  # generated image with its caption -> fake
    real_uncond: torch.Tensor | None = None
    fake_uncond: torch.Tensor | None = None


def discriminator_loss(
    logits: DiscriminatorLogits, adversarial: AdversarialLoss = bce_loss
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage-I: real + (wrong + fake) / 2.
    Stage-II with the unconditional head: (real + real_u) / 2 + (fake + wrong + fake_u) / 3.
    The parts are detached 0-d tensors, not floats: reading them would make every step wait for the GPU.
    """
    real = adversarial(logits.real, True, False)
    wrong = adversarial(logits.wrong, False, False)
    fake = adversarial(logits.fake, False, False)
    parts = {"d_real": real.detach(), "d_wrong": wrong.detach(), "d_fake": fake.detach()}
    if logits.real_uncond is None or logits.fake_uncond is None:
        return real + 0.5 * (wrong + fake), parts
    real_u = adversarial(logits.real_uncond, True, False)
    fake_u = adversarial(logits.fake_uncond, False, False)
    parts.update(d_real_uncond=real_u.detach(), d_fake_uncond=fake_u.detach())
    return (real + real_u) / 2 + (fake + wrong + fake_u) / 3, parts


def kl_loss(mu_BC: torch.Tensor, logvar_BC: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)), averaged over batch and code dimensions as in StackGAN."""
    return -0.5 * torch.mean(1 + logvar_BC - mu_BC.pow(2) - logvar_BC.exp())


def generator_loss(
    fake_logits_B: torch.Tensor,
    fake_uncond_logits_B: torch.Tensor | None,
    mu_BC: torch.Tensor,
    logvar_BC: torch.Tensor,
    kl_weight: float,
    adversarial: AdversarialLoss = bce_loss,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """adv(D(fake, text) -> real) [+ adv(D_uncond(fake) -> real)] + kl_weight * KL; detached parts as above."""
    adv = adversarial(fake_logits_B, True, True)
    parts = {"g_adv": adv.detach()}
    if fake_uncond_logits_B is not None:
        adv_u = adversarial(fake_uncond_logits_B, True, True)
        parts["g_adv_uncond"] = adv_u.detach()
        adv = adv + adv_u
    kl = kl_loss(mu_BC, logvar_BC)
    parts["kl"] = kl.detach()
    return adv + kl_weight * kl, parts


def mismatched_indices(
    keys_B: torch.Tensor,
    generator: torch.Generator | None = None,
    similarity_BB: torch.Tensor | None = None,
    hard_fraction: float = 0.0,
) -> torch.Tensor:
    """For each sample i, a j whose key (class or scene) differs: captions[j] mismatches image i.

    The PyTorch port shifts the batch by one, which can pair an image with a caption of the same
    class; here the pair is drawn only among samples with another key. By default j is uniform
    among them (the paper). With ``hard_fraction`` > 0, that share of the samples instead draw j
    uniformly among the quarter of other-key samples most similar to i (``similarity_BB``, e.g. of
    the images): a mismatch that shares the most visible traits (on shapes, the background), so the
    discriminator must check the rest of what the caption names. (The single nearest sample was
    tried and taught less: its caption differs too little for an untrained discriminator.)
    """
    if keys_B.ndim != 1 or keys_B.numel() < 2:
        raise ValueError("mismatched_indices needs a 1-D batch of at least two keys")
    allowed_BB = keys_B[None, :] != keys_B[:, None]
    if bool((allowed_BB.sum(dim=1) == 0).any()):
        raise ValueError("every key in the batch is the same: no mismatched caption can be drawn")
    uniform_B = torch.multinomial(allowed_BB.float(), 1, generator=generator).squeeze(1)
    if hard_fraction <= 0.0:
        return uniform_B
    if similarity_BB is None:
        raise ValueError("hard mismatches need the batch's similarity matrix")
    k = max(1, int(allowed_BB.sum(dim=1).min()) // 4)
    similar_BK = similarity_BB.float().masked_fill(~allowed_BB, float("-inf")).topk(k, dim=1).indices
    pick_B = torch.randint(k, (keys_B.shape[0],), generator=generator)
    near_B = similar_BK.gather(1, pick_B[:, None]).squeeze(1)
    hard_B = torch.rand(keys_B.shape[0], generator=generator) < hard_fraction
    return torch.where(hard_B, near_B, uniform_B)


def image_similarity(images_B3HW: torch.Tensor, side: int = 8) -> torch.Tensor:
    """B x B: minus the squared distance between 8 x 8 thumbnails (layout and colours, no detail)."""
    thumbs = torch.nn.functional.adaptive_avg_pool2d(images_B3HW.float(), side).flatten(1)
    return -torch.cdist(thumbs, thumbs).square()
