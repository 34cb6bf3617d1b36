"""Building blocks shared by both stages: conditioning augmentation, up/down/residual blocks, init."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn


def conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    # No bias: every conv3x3 is followed by BatchNorm (or tanh on the image, as in the paper's code).
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False)


def up_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """Nearest-neighbour x2, conv3x3, BN, ReLU: doubles the side."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv3x3(in_ch, out_ch),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def down_block(in_ch: int, out_ch: int, batch_norm: bool = True) -> nn.Sequential:
    """conv4x4 stride 2 (+ BN), LeakyReLU(0.2): halves the side."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1, bias=False)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def conv3x3_bn_lrelu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(in_ch, out_ch), nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2, inplace=True))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.relu(x_BCHW + self.body(x_BCHW))


class ConditioningAugmentation(nn.Module):
    """Text embedding -> Gaussian (mu, logvar) -> sampled code c = mu + sigma * eps.

    Unlike the public PyTorch port there is no ReLU before the split: a ReLU there clamps the
    log-variance to >= 0 (sigma >= 1) and the mean to >= 0, which is not the paper's model.
    """

    def __init__(self, text_dim: int, c_dim: int) -> None:
        super().__init__()
        self.c_dim = c_dim
        self.fc = nn.Linear(text_dim, 2 * c_dim)

    def forward(
        self, text_BT: torch.Tensor, eps_BC: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (c_BC, mu_BC, logvar_BC). ``eps_BC`` fixes the sample (tests, evaluation)."""
        mu, logvar = self.fc(text_BT).chunk(2, dim=1)
        if eps_BC is None:
            eps_BC = torch.randn_like(mu)
        c = mu + torch.exp(0.5 * logvar) * eps_BC
        return c, mu, logvar


def init_weights(module: nn.Module) -> None:
    """DCGAN/StackGAN init: conv and linear weights N(0, 0.02); BN weight N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class TextProjection(nn.Module):
    """Compresses the sentence embedding inside D and tiles it over the feature map (TF original)."""

    def __init__(self, text_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(text_dim, out_dim), nn.LeakyReLU(0.2, inplace=True))

    def forward(self, text_BT: torch.Tensor, side: int) -> torch.Tensor:
        code = self.fc(text_BT)
        return code[:, :, None, None].expand(-1, -1, side, side)


class ConditionalLogits(nn.Module):
    """Matching-aware head: image features (B x C x 4 x 4) + projected text -> one logit per image."""

    def __init__(self, feat_ch: int, text_dim: int, d_text_dim: int) -> None:
        super().__init__()
        self.text = TextProjection(text_dim, d_text_dim)
        self.joint = conv3x3_bn_lrelu(feat_ch + d_text_dim, feat_ch)
        self.out = nn.Conv2d(feat_ch, 1, kernel_size=4, stride=4)

    def forward(self, feat_BC44: torch.Tensor, text_BT: torch.Tensor) -> torch.Tensor:
        tiled = self.text(text_BT, feat_BC44.shape[-1])
        return self.out(self.joint(torch.cat([feat_BC44, tiled], dim=1))).flatten()


class UnconditionalLogits(nn.Module):
    """Image-only head of the Stage-II discriminator: is this a real image at all?"""

    def __init__(self, feat_ch: int) -> None:
        super().__init__()
        self.out = nn.Conv2d(feat_ch, 1, kernel_size=4, stride=4)

    def forward(self, feat_BC44: torch.Tensor) -> torch.Tensor:
        return self.out(feat_BC44).flatten()


@dataclasses.dataclass
class DiscriminatorOutput:
    """Every head of one discriminator call, so a DDP-wrapped D runs them in a single forward."""

    matching_B: torch.Tensor  # image with its own caption
    mismatched_B: torch.Tensor | None  # image with the mismatched caption, when one was given
    unconditional_B: torch.Tensor | None  # image only (Stage-II)
