"""Parameter counts and forward FLOPs per image of every network of a profile."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models.config import ModelProfile
from models.stage1 import Stage1Discriminator, Stage1Generator
from models.stage2 import Stage2Discriminator, Stage2Generator

_BATCH = 2  # BatchNorm1d needs > 1 sample in train mode; we count in eval mode and divide anyway


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _forward_gflop_per_image(fn) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops() / _BATCH / 1e9


def summarize(profile: ModelProfile) -> dict[str, dict[str, float]]:
    """Returns {network: {"parameters": int, "gflop_per_image": float}} for the profile."""
    s1, s2 = profile.stage1, profile.stage2
    torch.manual_seed(0)
    g1, d1 = Stage1Generator(s1).eval(), Stage1Discriminator(s1).eval()
    g2, d2 = Stage2Generator(s2).eval(), Stage2Discriminator(s2).eval()
    text1 = torch.randn(_BATCH, s1.text_dim)
    text2 = torch.randn(_BATCH, s2.text_dim)
    z1 = torch.randn(_BATCH, s1.z_dim)
    z2 = torch.randn(_BATCH, s2.z_dim) if s2.z_dim else None
    img1 = torch.randn(_BATCH, 3, s1.image_size, s1.image_size)
    img2 = torch.randn(_BATCH, 3, s2.image_size, s2.image_size)
    words = torch.randn(_BATCH, 8, max(s2.word_dim, 1)) if s2.attention else None
    mask = torch.ones(_BATCH, 8, dtype=torch.bool) if s2.attention else None

    def d_forward(d, img, text):
        feat = d.features(img)
        d.conditional(feat, text)
        d.unconditional(feat)

    nets = {
        "stage1_generator": (g1, lambda: g1(text1, z1)),
        "stage1_discriminator": (d1, lambda: d_forward(d1, img1, text1)),
        "stage2_generator": (g2, lambda: g2(img1, text2, z2, words, mask)),
        "stage2_discriminator": (d2, lambda: d_forward(d2, img2, text2)),
    }
    return {
        name: {"parameters": count_parameters(net), "gflop_per_image": round(_forward_gflop_per_image(fn), 4)}
        for name, (net, fn) in nets.items()
    }
