"""Stage-I: caption embedding + noise -> low-resolution image, and its discriminator.

Generator (paper, 64 px):  concat(z, c) -> FC -> 1024 x 4 x 4 -> 4 up-blocks -> 64 x 8..64 -> RGB, tanh.
Discriminator:             4 stride-2 convs 3 -> 64 -> 128 -> 256 -> 512 down to 4 x 4, then the
                           matching-aware head that sees the (compressed) caption.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import Stage1Config
from models.layers import (
    ConditionalLogits,
    ConditioningAugmentation,
    DiscriminatorOutput,
    conv3x3,
    down_block,
    init_weights,
    up_block,
)


class Stage1Generator(nn.Module):
    def __init__(self, cfg: Stage1Config) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.ngf * 8
        self.ca = ConditioningAugmentation(cfg.text_dim, cfg.c_dim)
        self.fc = nn.Sequential(
            nn.Linear(cfg.z_dim + cfg.c_dim, ch * 4 * 4, bias=False),
            nn.BatchNorm1d(ch * 4 * 4),
            nn.ReLU(inplace=True),
        )
        blocks = []
        for _ in range(cfg.num_up_blocks):
            blocks.append(up_block(ch, ch // 2))
            ch //= 2
        self.up = nn.Sequential(*blocks)
        self.to_rgb = nn.Sequential(conv3x3(ch, 3), nn.Tanh())
        init_weights(self)

    def forward(
        self, text_BT: torch.Tensor, z_BZ: torch.Tensor, eps_BC: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (image_B3HW in [-1, 1], mu_BC, logvar_BC)."""
        c, mu, logvar = self.ca(text_BT, eps_BC)
        h = self.fc(torch.cat([z_BZ, c], dim=1)).view(z_BZ.shape[0], -1, 4, 4)
        return self.to_rgb(self.up(h)), mu, logvar


class Stage1Discriminator(nn.Module):
    def __init__(self, cfg: Stage1Config) -> None:
        super().__init__()
        self.cfg = cfg
        layers = [down_block(3, cfg.ndf, batch_norm=False)]  # no BN on the first layer (DCGAN)
        ch = cfg.ndf
        for _ in range(cfg.num_up_blocks - 1):
            layers.append(down_block(ch, ch * 2))
            ch *= 2
        self.encode = nn.Sequential(*layers)
        self.feat_channels = ch
        self.cond = ConditionalLogits(ch, cfg.text_dim, cfg.d_text_dim)
        init_weights(self)

    def features(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """Image -> B x C x 4 x 4 features, shared by the real/mismatched-text evaluations."""
        return self.encode(img_B3HW)

    def conditional(self, feat_BC44: torch.Tensor, text_BT: torch.Tensor) -> torch.Tensor:
        return self.cond(feat_BC44, text_BT)

    def unconditional(self, feat_BC44: torch.Tensor) -> torch.Tensor | None:
        return None  # Stage-I has only the matching-aware head

    def forward(
        self, img_B3HW: torch.Tensor, text_BT: torch.Tensor, mismatched_text_BT: torch.Tensor | None = None
    ) -> DiscriminatorOutput:
        feat = self.features(img_B3HW)
        mismatched = None if mismatched_text_BT is None else self.conditional(feat, mismatched_text_BT)
        return DiscriminatorOutput(self.conditional(feat, text_BT), mismatched, None)
