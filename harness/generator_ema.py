"""An exponential moving average of the generator's weights (``train.g_ema``), for evaluation only.

GAN training cycles: consecutive evaluations of one run differ more than configs do. Averaging the
generator's weights over the last few hundred steps damps that cycling (Yazici et al., ICLR 2019; BigGAN
and StyleGAN evaluate such a generator). Training goes on with the live generator; the average is what
gets sampled, scored, ranked and handed to Stage-II.

Built on ``torch.optim.swa_utils.AveragedModel``. Two details decide whether the average is a usable network:
- **BatchNorm statistics.** Averaged weights with the live generator's running statistics are not a
  consistent network. ``bn: average`` averages the running statistics with the same decay as the weights
  (AveragedModel's ``use_buffers``); ``bn: copy`` copies the live ones (the naive version, kept to measure it).
- **Warm-up.** Started from the random initial weights, a decay of 0.999 remembers them for thousands of
  steps. The decay at update t is min(decay, (1 + t) / (10 + t)), as TensorFlow's ExponentialMovingAverage
  with ``num_updates``: the average follows the live weights early and settles to ``decay`` later.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from harness.config import EMA_BN_MODES as BN_MODES


def warmed_decay(decay: float, updates: torch.Tensor) -> torch.Tensor:
    """The decay of update number ``updates`` (0-based, a tensor so the GPU is never read back)."""
    t = updates.to(torch.float32)
    return torch.clamp((1.0 + t) / (10.0 + t), max=decay)


class GeneratorEMA:
    """θ_ema ← d·θ_ema + (1 − d)·θ after every generator step, d from :func:`warmed_decay`."""

    def __init__(self, generator: nn.Module, decay: float, bn: str = "average") -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        if bn not in BN_MODES:
            raise ValueError(f"bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
        self.decay, self.bn = decay, bn

        def ema_update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
            if not averaged[0].is_floating_point():  # BatchNorm's num_batches_tracked: a count, not a weight
                torch._foreach_copy_(averaged, current)
                return
            keep = warmed_decay(decay, n_averaged - 1)  # AveragedModel's first update copied: this is update n
            for a, c in zip(averaged, current, strict=True):
                a.lerp_(c, (1.0 - keep).to(a.dtype))

        self.averaged = AveragedModel(generator, multi_avg_fn=ema_update, use_buffers=bn == "average")
        self.averaged.requires_grad_(False)
        self.averaged.update_parameters(generator)  # the average starts at the live weights

    @property
    def module(self) -> nn.Module:
        """The averaged generator, a network of the live generator's class."""
        return self.averaged.module

    @torch.no_grad()
    def update(self, generator: nn.Module) -> None:
        self.averaged.update_parameters(generator)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "n_averaged": self.averaged.n_averaged.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.averaged.n_averaged.copy_(state["n_averaged"])
