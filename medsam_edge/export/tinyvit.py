"""LiteMedSAM's image encoder: a TinyViT-5M variant that keeps full resolution in its stem (inference only).

Data flow for a (B, 3, 256, 256) image:

==========  ===========================================  =====================
stage       what                                         output
==========  ===========================================  =====================
stem        two 1x1 ConvBN (GELU between), no striding   (B, 64, 256, 256)
layers.0    2 MBConv blocks, then merge (stride 2)       (B, 128, 128, 128)
layers.1    2 window-attention blocks (window 7), merge  (B, 160, 64, 64)
layers.2    6 window-attention blocks (window 14), merge (stride 1!)  (B, 320, 64, 64)
layers.3    2 window-attention blocks (window 7)         (B, 320, 64, 64)
neck        1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (B, 256, 64, 64)
==========  ===========================================  =====================

Every stage carries (B, C, H, W) channels first, the attention stages included: the window partition is the only
re-ordering (to (windows, tokens, C) for the attention and back), the local 3x3 convolution and the MLP (LayerNorm over
channels + 1x1 convolutions, the checkpoint's Linear weights reshaped at load time) run on the feature map directly.
The checkpoint's training code carries tokens channels-last and permutes around every local convolution; the
arithmetic is the same, but OpenVINO's CPU plugin spent ~20% (f32) to ~30% (int8) of the encoder time in those
permutes and their layout reorders (benchmarks/results/layout.md).

Windows that do not tile the grid are zero-padded at the bottom/right *before* the attention's LayerNorm, so padded
positions take part as keys (as in the checkpoint's training code); their outputs are cropped away.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBN, LayerNorm2d


@dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of LiteMedSAM's TinyViT (fixed by the checkpoint)."""

    image_size: int = 256
    in_channels: int = 3
    dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    heads: tuple[int, ...] = (2, 4, 5, 10)  # heads[0] unused: stage 0 is convolutional
    windows: tuple[int, ...] = (7, 7, 14, 7)  # windows[0] unused
    merge_strides: tuple[int, ...] = (2, 2, 1)  # the last merge keeps 64x64 (LiteMedSAM's change to TinyViT)
    mlp_ratio: int = 4
    mbconv_expand: int = 4
    local_kernel: int = 3
    out_channels: int = 256


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, expand: int) -> None:
        super().__init__()
        hidden = channels * expand
        self.conv1 = ConvBN(channels, hidden)
        self.conv2 = ConvBN(hidden, hidden, kernel=3, groups=hidden)
        self.conv3 = ConvBN(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv1(x))
        y = F.gelu(self.conv2(y))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Stage transition: 1x1 ConvBN, GELU, 3x3 depthwise ConvBN (stride ``stride``), GELU, 1x1 ConvBN.

    Shapes: (B, c_in, H, W) -> (B, c_out, H / stride, W / stride) (channels first on both sides).
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(c_in, c_out)
        self.conv2 = ConvBN(c_out, c_out, kernel=3, stride=stride, groups=c_out)
        self.conv3 = ConvBN(c_out, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        return self.conv3(x)


def relative_offset_index(window: int) -> torch.Tensor:
    """(window**2, window**2) int64 index into a (heads, window**2) bias table.

    Token i at (yi, xi) attending to token j at (yj, xj) uses entry ``|yi - yj| * window + |xi - xj|``: one learned
    bias per absolute 2D offset, per head.
    """
    axis = torch.arange(window)
    ys = axis.repeat_interleave(window)
    xs = axis.repeat(window)
    dy = (ys[:, None] - ys[None, :]).abs()
    dx = (xs[:, None] - xs[None, :]).abs()
    return dy * window + dx


class WindowAttention(nn.Module):
    """Multi-head self-attention inside one window, with a learned bias per relative offset.

    LayerNorm is applied first (pre-norm inside the module). Head dim = dim / heads for queries, keys and values.
    Shapes: (N, window**2, dim) -> (N, window**2, dim), N = batch x windows.
    """

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.window = window
        self.scale = self.head_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)  # per head: [query | key | value]
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, window * window))
        self.register_buffer("offset_index", relative_offset_index(window), persistent=False)

    def bias_table(self) -> torch.Tensor:
        """(heads, window**2, window**2) additive attention bias expanded from the learned per-offset biases."""
        return self.attention_biases[:, self.offset_index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        qkv = self.qkv(self.norm(x)).view(n, tokens, self.heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=3)  # each (N, heads, tokens, head_dim)
        scores = (q @ k.transpose(-2, -1)) * self.scale + self.bias_table()
        out = scores.softmax(dim=-1) @ v  # (N, heads, tokens, head_dim)
        return self.proj(out.transpose(1, 2).reshape(n, tokens, dim))


class FeedForward(nn.Module):
    """Pre-norm MLP on a feature map: LayerNorm over channels, 1x1 conv (dim -> hidden), GELU, 1x1 conv (-> dim).

    The checkpoint stores ``fc1`` / ``fc2`` as Linear weights (out, in); they load into the (out, in, 1, 1) convs.
    Shapes: (B, dim, H, W) -> (B, dim, H, W).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=1e-5)  # nn.LayerNorm's eps, same parameter names
        self.fc1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, dim, kernel_size=1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in ("fc1.weight", "fc2.weight"):
            weight = state_dict.get(prefix + name)
            if weight is not None and weight.dim() == 2:  # Linear layout of the checkpoint
                state_dict[prefix + name] = weight[:, :, None, None]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


def split_windows(x: torch.Tensor, window: int) -> tuple[torch.Tensor, int, int]:
    """(B, C, H, W) -> ((B * nH * nW, window**2, C), padded H, padded W); zero-pads bottom/right to whole windows.

    Windows are ordered row-major over the grid, tokens row-major inside a window."""
    b, c, h, w = x.shape
    pad_h = (window - h % window) % window
    pad_w = (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    ph, pw = h + pad_h, w + pad_w
    x = x.view(b, c, ph // window, window, pw // window, window).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, window * window, c), ph, pw


def merge_windows(x: torch.Tensor, window: int, batch: int, ph: int, pw: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`split_windows`: (B * nH * nW, window**2, C) -> (B, C, h, w), padding cropped."""
    c = x.shape[2]
    x = x.view(batch, ph // window, pw // window, window, window, c).permute(0, 5, 1, 3, 2, 4)
    x = x.reshape(batch, c, ph, pw)
    return x[:, :, :h, :w] if (ph != h or pw != w) else x


class TinyViTBlock(nn.Module):
    """Window attention (residual), 3x3 depthwise ConvBN (no residual), MLP (residual).

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: int, local_kernel: int) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, heads, window)
        self.local_conv = ConvBN(dim, dim, kernel=local_kernel, groups=dim)
        self.mlp = FeedForward(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        windows, ph, pw = split_windows(x, self.window)
        x = x + merge_windows(self.attn(windows), self.window, b, ph, pw, h, w)
        x = self.local_conv(x)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks then a merge. Shapes: (B, C, H, W) -> (B, C', H / s, W / s), channels first."""

    def __init__(self, dim: int, depth: int, expand: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """Stages 1-3: TinyViT blocks, then an optional merge.

    Shapes: (B, C, H, W) -> (B, C', H / s, W / s) (C' = C, s = 1 without merge).
    """

    def __init__(
        self, dim: int, depth: int, heads: int, window: int, mlp_ratio: int, local_kernel: int,
        out_dim: int | None, stride: int,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, heads, window, mlp_ratio, local_kernel) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class PatchEmbed(nn.Module):
    """Stem: 1x1 ConvBN (c_in -> dim/2), GELU, 1x1 ConvBN (-> dim). Shapes: (B, c_in, H, W) -> (B, dim, H, W)."""

    def __init__(self, c_in: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(c_in, dim // 2), nn.GELU(), ConvBN(dim // 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class TinyViTEncoder(nn.Module):
    """Image (B, 3, 256, 256) float32 in [0, 1] -> embedding (B, 256, 64, 64). See the module docstring."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        cfg = config or EncoderConfig()
        self.config = cfg
        self.patch_embed = PatchEmbed(cfg.in_channels, cfg.dims[0])
        stages: list[nn.Module] = [
            ConvStage(cfg.dims[0], cfg.depths[0], cfg.mbconv_expand, cfg.dims[1], cfg.merge_strides[0])
        ]
        last = len(cfg.dims) - 1
        for i in range(1, len(cfg.dims)):
            stages.append(
                AttentionStage(
                    cfg.dims[i], cfg.depths[i], cfg.heads[i], cfg.windows[i], cfg.mlp_ratio, cfg.local_kernel,
                    out_dim=cfg.dims[i + 1] if i < last else None,
                    stride=cfg.merge_strides[i] if i < last else 1,
                )
            )
        self.layers = nn.ModuleList(stages)
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.dims[-1], cfg.out_channels, kernel_size=1, bias=False),
            LayerNorm2d(cfg.out_channels),
            nn.Conv2d(cfg.out_channels, cfg.out_channels, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.out_channels),
        )

    def attention_modules(self) -> list[WindowAttention]:
        """Every window-attention module, in execution order."""
        return [m for m in self.modules() if isinstance(m, WindowAttention)]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(image)
        for stage in self.layers:
            x = stage(x)  # (B, C, H, W) throughout
        return self.neck(x)
