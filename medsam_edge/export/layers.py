"""Small building blocks shared by the LiteMedSAM encoder and heads (inference only).

Attribute names (``c``, ``bn``, ``weight``, ``bias``) are fixed by the checkpoint's state-dict keys.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBN(nn.Module):
    """Bias-free 2D convolution followed by BatchNorm with running statistics.

    Shapes: (B, c_in, H, W) -> (B, c_out, H / stride, W / stride); "same" padding for odd kernels.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor (biased variance, eps 1e-6 unless given); shape unchanged."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        variance = centred.pow(2).mean(dim=1, keepdim=True)
        normed = centred / torch.sqrt(variance + self.eps)
        return normed * self.weight[:, None, None] + self.bias[:, None, None]
