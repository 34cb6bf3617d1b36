"""BatchNorm whose batch statistics cover every data-parallel worker's share of the batch.

The paper trains on one GPU at batch 64; with 4 DDP workers at 16 each, plain BatchNorm normalises
each worker's 16 images by their own statistics. ``train.sync_batchnorm`` makes them global again.
On CUDA this is torch's ``SyncBatchNorm`` (fused kernels over NCCL). torch's version refuses CPU
tensors, so on CPU (gloo) ``GlobalBatchNorm`` does the same with one differentiable all-reduce of
per-channel sums per layer: slower, but the CPU runs and tests see the global statistics too.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of the default process group, in training mode; plain
    BatchNorm (running statistics) in eval mode and outside a process group."""

    def _check_input_dim(self, input_BC: torch.Tensor) -> None:
        if input_BC.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input_BC.dim()}D input)")

    def forward(self, x_BC: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x_BC)
        channels = x_BC.shape[1]
        reduce_dims = [0, *range(2, x_BC.dim())]
        x = x_BC.float()  # statistics in fp32 also under bf16 autocast
        count = x.new_tensor([x.numel() / channels])
        # One all-reduce of [sum, sum of squares, count]; its backward all-reduces the gradients.
        stats_S = dist_fn.all_reduce(torch.cat([x.sum(reduce_dims), (x * x).sum(reduce_dims), count]))
        n = stats_S[-1]
        mean_C = stats_S[:channels] / n
        var_C = (stats_S[channels:2 * channels] / n - mean_C * mean_C).clamp_min(0.0)  # biased, as BatchNorm
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean_C.to(self.running_mean.dtype), momentum)
                unbiased_C = var_C * n / (n - 1).clamp_min(1.0)
                self.running_var.lerp_(unbiased_C.to(self.running_var.dtype), momentum)
        shape = (1, channels) + (1,) * (x.dim() - 2)
        y = (x - mean_C.view(shape)) * torch.rsqrt(var_C.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x_BC.dtype)


def _to_global(bn: nn.modules.batchnorm._BatchNorm) -> GlobalBatchNorm:
    """The same parameters and buffers (objects, not copies: the optimizers already hold them)."""
    new = GlobalBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    for name, tensor in [*bn.named_parameters(recurse=False), *bn.named_buffers(recurse=False)]:
        setattr(new, name, tensor)
    new.train(bn.training)
    return new


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every BatchNorm layer synchronised across workers (in place for children)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        return _to_global(module)
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module
