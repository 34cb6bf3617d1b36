"""Spatial word attention (AttnGAN) as an optional Stage-II block.

Each image region attends over the caption's words: the words are projected to the image's
channel count, region-word scores are soft-maxed over the (unpadded) words, and the resulting
word-context map is returned with the attention maps so reports can show which word drove where.
"""

from __future__ import annotations

import torch
from torch import nn


class WordAttention(nn.Module):
    def __init__(self, word_dim: int, channels: int) -> None:
        super().__init__()
        self.project = nn.Conv1d(word_dim, channels, kernel_size=1, bias=False)

    def forward(
        self, h_BCHW: torch.Tensor, words_BTD: torch.Tensor, mask_BT: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (context_BCHW, attention_BTHW); ``mask_BT`` is True for real (unpadded) words.

        Attention sums to 1 over the unmasked words of each region.
        """
        b, c, h, w = h_BCHW.shape
        if not bool(mask_BT.any(dim=1).all()):
            raise ValueError("every caption needs at least one unmasked word")
        e_BCT = self.project(words_BTD.transpose(1, 2))
        regions_BNC = h_BCHW.flatten(2).transpose(1, 2)
        scores_BNT = torch.bmm(regions_BNC, e_BCT)
        scores_BNT = scores_BNT.masked_fill(~mask_BT[:, None, :], float("-inf"))
        attn_BNT = torch.softmax(scores_BNT, dim=2)
        context_BCN = torch.bmm(e_BCT, attn_BNT.transpose(1, 2))
        context = context_BCN.view(b, c, h, w)
        attn_BTHW = attn_BNT.transpose(1, 2).reshape(b, -1, h, w)
        return context, attn_BTHW
