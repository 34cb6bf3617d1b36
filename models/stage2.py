"""Stage-II: refines the frozen Stage-I image to high resolution, and its two-headed discriminator.

Generator (paper, 64 -> 256 px): encode the Stage-I image to 512 x 16 x 16, concatenate its own
CA code (and optional noise) tiled to 16 x 16, joint conv, [word attention], 4 residual blocks,
4 up-blocks to 256 px, conv3x3, tanh. With ``init: residual`` (not in the paper) the last conv3x3
starts at zero and adds a correction to the bilinearly upsampled Stage-I image in logit space.
Discriminator: 6 stride-2 convs down to 4 x 4 (64 ... 2048 channels), two conv3x3 back to 512,
then a matching-aware (text) head and an unconditional (image-only) head.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from models.attention import WordAttention
from models.config import Stage2Config
from models.layers import (
    ConditionalLogits,
    ConditioningAugmentation,
    DiscriminatorOutput,
    ResidualBlock,
    UnconditionalLogits,
    conv3x3,
    conv3x3_bn_lrelu,
    down_block,
    init_weights,
    up_block,
)
from models.stage1 import Stage1Generator


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


@dataclasses.dataclass
class Stage2Output:
    image_B3HW: torch.Tensor
    mu_BC: torch.Tensor
    logvar_BC: torch.Tensor
    attention_BTHW: torch.Tensor | None  # None unless attention is on


class Stage2Generator(nn.Module):
    def __init__(self, cfg: Stage2Config) -> None:
        super().__init__()
        self.cfg = cfg
        ngf = cfg.ngf
        self.ca = ConditioningAugmentation(cfg.text_dim, cfg.c_dim)
        self.encode = nn.Sequential(
            conv3x3(3, ngf),
            nn.ReLU(inplace=True),
            _conv_bn_relu(ngf, ngf * 2, kernel=4, stride=2),
            _conv_bn_relu(ngf * 2, ngf * 4, kernel=4, stride=2),
        )
        ch = ngf * 4
        self.joint = nn.Sequential(
            conv3x3(ch + cfg.c_dim + cfg.z_dim, ch), nn.BatchNorm2d(ch), nn.ReLU(inplace=True)
        )
        if cfg.attention:
            self.attention = WordAttention(cfg.word_dim, ch)
            self.fuse = nn.Sequential(conv3x3(2 * ch, ch), nn.BatchNorm2d(ch), nn.ReLU(inplace=True))
        self.residual = nn.Sequential(*[ResidualBlock(ch) for _ in range(cfg.num_residual)])
        blocks = []
        for _ in range(cfg.num_up_blocks):
            blocks.append(up_block(ch, ch // 2))
            ch //= 2
        self.up = nn.Sequential(*blocks)
        self.to_rgb = nn.Sequential(conv3x3(ch, 3), nn.Tanh())
        init_weights(self)
        if cfg.init == "residual":  # a correction in logit space, zero at the start: output == upsampled input
            self.to_rgb = conv3x3(ch, 3)
            nn.init.zeros_(self.to_rgb.weight)

    def forward(
        self,
        stage1_img_B3hw: torch.Tensor,
        text_BT: torch.Tensor,
        z_BZ: torch.Tensor | None = None,
        words_BTD: torch.Tensor | None = None,
        word_mask_BT: torch.Tensor | None = None,
        eps_BC: torch.Tensor | None = None,
    ) -> Stage2Output:
        cfg = self.cfg
        c, mu, logvar = self.ca(text_BT, eps_BC)
        h = self.encode(stage1_img_B3hw)
        side = h.shape[-1]
        codes = [c]
        if cfg.z_dim:
            if z_BZ is None or z_BZ.shape[1] != cfg.z_dim:
                raise ValueError(f"Stage-II was built with z_dim={cfg.z_dim}: pass z_BZ of that width")
            codes.append(z_BZ)
        code = torch.cat(codes, dim=1)[:, :, None, None].expand(-1, -1, side, side)
        h = self.joint(torch.cat([h, code], dim=1))
        attention = None
        if cfg.attention:
            if words_BTD is None or word_mask_BT is None:
                raise ValueError("Stage-II attention needs words_BTD and word_mask_BT")
            context, attention = self.attention(h, words_BTD, word_mask_BT)
            h = self.fuse(torch.cat([h, context], dim=1))
        out = self.to_rgb(self.up(self.residual(h)))
        if cfg.init == "residual":
            base = F.interpolate(stage1_img_B3hw, size=out.shape[-2:], mode="bilinear", align_corners=False)
            # tanh(atanh(x) + delta): stays in (-1, 1) with a gradient everywhere, unlike a clamp
            img = torch.tanh(torch.atanh(base.clamp(-0.999, 0.999)) + out)
        else:
            img = out
        return Stage2Output(img, mu, logvar, attention)


class Stage2Discriminator(nn.Module):
    def __init__(self, cfg: Stage2Config) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = [down_block(3, cfg.ndf, batch_norm=False)]
        ch = cfg.ndf
        side = cfg.image_size // 2
        while side > 4:
            layers.append(down_block(ch, ch * 2))
            ch *= 2
            side //= 2
        while ch > cfg.ndf * 8:  # paper: 2048 -> 1024 -> 512 with two conv3x3
            layers.append(conv3x3_bn_lrelu(ch, ch // 2))
            ch //= 2
        self.encode = nn.Sequential(*layers)
        self.feat_channels = ch
        self.cond = ConditionalLogits(ch, cfg.text_dim, cfg.d_text_dim)
        self.uncond = UnconditionalLogits(ch)
        init_weights(self)

    def features(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        return self.encode(img_B3HW)

    def conditional(self, feat_BC44: torch.Tensor, text_BT: torch.Tensor) -> torch.Tensor:
        return self.cond(feat_BC44, text_BT)

    def unconditional(self, feat_BC44: torch.Tensor) -> torch.Tensor | None:
        return self.uncond(feat_BC44)

    def forward(
        self, img_B3HW: torch.Tensor, text_BT: torch.Tensor, mismatched_text_BT: torch.Tensor | None = None
    ) -> DiscriminatorOutput:
        feat = self.features(img_B3HW)
        mismatched = None if mismatched_text_BT is None else self.conditional(feat, mismatched_text_BT)
        return DiscriminatorOutput(self.conditional(feat, text_BT), mismatched, self.unconditional(feat))


class FrozenStage1(nn.Module):
    """A trained Stage-I generator used as Stage-II's input: no gradients, and always in eval mode.

    The public PyTorch port leaves Stage-I inside Stage-II in train mode, so its BatchNorm running
    statistics keep drifting while "frozen"; here ``train()`` cannot switch it back on.
    """

    def __init__(self, generator: Stage1Generator) -> None:
        super().__init__()
        self.generator = generator
        for p in self.generator.parameters():
            p.requires_grad_(False)
        self.generator.eval()

    def train(self, mode: bool = True) -> FrozenStage1:
        self.training = False
        self.generator.eval()
        return self

    @torch.no_grad()
    def forward(self, text_BT: torch.Tensor, z_BZ: torch.Tensor) -> torch.Tensor:
        img, _, _ = self.generator(text_BT, z_BZ)
        return img
