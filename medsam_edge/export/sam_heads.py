"""LiteMedSAM's prompt encoder and mask decoder (SAM heads), inference only, box prompts only.

Notation: C = 256 channels, H = W = 64 embedding grid, B = number of boxes of one image.

* :class:`PromptEncoder` turns boxes (B, 4) XYXY in 256-pixel space into two corner tokens (B, 2, C) and provides
  the "no mask" dense embedding (1, C, 1, 1) and the dense positional encoding of the grid (1, H*W, C).
* :class:`MaskDecoder` runs a two-way transformer between 7 tokens per box (IoU token, 4 mask tokens, 2 corners)
  and the H*W image tokens, then upsamples x4 and predicts one mask per box: logits (B, 1, 4H, 4W), IoU (B, 1).

The image embedding enters with batch 1 and is never copied per box: the first token-to-image attention
broadcasts it, and it becomes (B, H*W, C) after the first image-to-token update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LayerNorm2d


@dataclass(frozen=True)
class HeadsConfig:
    """Hyper-parameters of the SAM heads (fixed by the checkpoint)."""

    dim: int = 256
    grid: int = 64  # embedding side
    image_size: int = 256  # encoder input side; boxes live in this pixel space
    mask_hidden: int = 16  # channels of the (unused) mask-prompt branch
    depth: int = 2
    heads: int = 8
    mlp_dim: int = 2048
    cross_downsample: int = 2  # cross attentions work in dim / 2
    mask_tokens: int = 4  # 1 single-mask + 3 multimask tokens; only token 0 is used here
    iou_hidden: int = 256


class FourierEncoding(nn.Module):
    """Random Fourier features of 2D points.

    A point (x, y) normalised to [0, 1] maps to ``[sin(f), cos(f)]`` with ``f = 2*pi * (2*(x, y) - 1) @ G``,
    G the stored (2, C/2) Gaussian matrix. Shapes: (..., 2) -> (..., C).
    """

    def __init__(self, half_dim: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.zeros(2, half_dim))

    def forward(self, unit_xy: torch.Tensor) -> torch.Tensor:
        phase = (2.0 * unit_xy - 1.0) @ self.positional_encoding_gaussian_matrix
        phase = phase * (2.0 * math.pi)
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)


def grid_centres(side: int) -> torch.Tensor:
    """(side * side, 2) pixel-centre coordinates (x, y) in [0, 1] of a square grid, row-major (y outer, x inner)."""
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    ys = centres.repeat_interleave(side)
    xs = centres.repeat(side)
    return torch.stack([xs, ys], dim=-1)


class PromptEncoder(nn.Module):
    """Box prompts -> sparse tokens; also the no-mask dense embedding and the grid positional encoding.

    ``mask_downscaling`` and the point-label embeddings 0/1 and ``not_a_point_embed`` are kept only so that the
    checkpoint loads strictly; box-only inference never uses them.
    """

    def __init__(self, cfg: HeadsConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or HeadsConfig()
        self.cfg = cfg
        self.pe_layer = FourierEncoding(cfg.dim // 2)
        # 0/1: negative/positive point, 2/3: top-left/bottom-right box corner
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, cfg.dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, cfg.dim)
        quarter = cfg.mask_hidden // 4
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, quarter, kernel_size=2, stride=2),
            LayerNorm2d(quarter),
            nn.GELU(),
            nn.Conv2d(quarter, cfg.mask_hidden, kernel_size=2, stride=2),
            LayerNorm2d(cfg.mask_hidden),
            nn.GELU(),
            nn.Conv2d(cfg.mask_hidden, cfg.dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, cfg.dim)
        self.register_buffer("grid_xy", grid_centres(cfg.grid), persistent=False)

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes (B, 4) XYXY in image_size pixels -> corner tokens (B, 2, C).

        Corners are shifted to pixel centres (+0.5) and normalised by the image size before the Fourier encoding;
        the learned corner embeddings 2 and 3 are added.
        """
        corners = (boxes + 0.5).reshape(-1, 2, 2) / float(self.cfg.image_size)
        corner_kind = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)
        return self.pe_layer(corners) + corner_kind

    def no_mask_embedding(self) -> torch.Tensor:
        """(1, C, 1, 1) dense prompt embedding used when no mask prompt is given (broadcast over the grid)."""
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1)

    def positional_tokens(self) -> torch.Tensor:
        """(1, H*W, C) positional encoding of the embedding grid, token-major (row-major over the grid)."""
        return self.pe_layer(self.grid_xy).unsqueeze(0)


class Attention(nn.Module):
    """Multi-head attention with optional down-projection: dim -> dim / downsample inside, back to dim.

    Shapes: q (Bq, Nq, dim), k (Bk, Nk, dim), v (Bk, Nk, dim) -> (max(Bq, Bk), Nq, dim); batch 1 broadcasts.
    """

    def __init__(self, dim: int, heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.head_dim = inner // heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, inner) -> (B, heads, N, inner / heads)."""
        return x.unflatten(2, (self.heads, -1)).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._split_heads(self.q_proj(q))
        k = self._split_heads(self.k_proj(k))
        v = self._split_heads(self.v_proj(v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        out = scores.softmax(dim=-1) @ v  # (B, heads, Nq, inner / heads)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class MLPBlock(nn.Module):
    """Linear (dim -> hidden), ReLU, Linear (hidden -> dim). Shapes: (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image cross-attention, token MLP, image->token cross-attention (post-norm).

    Shapes: queries (B, T, C), keys (1 or B, H*W, C), query_pe (B, T, C), key_pe (1, H*W, C)
    -> queries (B, T, C), keys (B, H*W, C).
    The first block feeds the tokens to self-attention without positional re-addition and without residual.
    """

    def __init__(self, cfg: HeadsConfig, first: bool) -> None:
        super().__init__()
        self.first = first
        self.self_attn = Attention(cfg.dim, cfg.heads)
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.cross_attn_token_to_image = Attention(cfg.dim, cfg.heads, cfg.cross_downsample)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mlp = MLPBlock(cfg.dim, cfg.mlp_dim)
        self.norm3 = nn.LayerNorm(cfg.dim)
        self.norm4 = nn.LayerNorm(cfg.dim)
        self.cross_attn_image_to_token = Attention(cfg.dim, cfg.heads, cfg.cross_downsample)

    def self_attend(self, queries: torch.Tensor, query_pe: torch.Tensor) -> torch.Tensor:
        """The token self-attention step (B, T, C) -> (B, T, C), norm1 included."""
        if self.first:
            return self.norm1(self.self_attn(queries, queries, queries))
        q = queries + query_pe
        return self.norm1(queries + self.self_attn(q, q, queries))

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries = self.self_attend(queries, query_pe)
        keys_pos = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, keys_pos, keys))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(keys_pos, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks, then a final token->image attention and LayerNorm on the tokens.

    Shapes: image tokens (1, H*W, C), image pe (1, H*W, C), prompt tokens (B, T, C)
    -> tokens (B, T, C), image tokens (B, H*W, C).
    """

    def __init__(self, cfg: HeadsConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(cfg, first=(i == 0)) for i in range(cfg.depth))
        self.final_attn_token_to_image = Attention(cfg.dim, cfg.heads, cfg.cross_downsample)
        self.norm_final_attn = nn.LayerNorm(cfg.dim)

    def forward(
        self, image_tokens: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries, keys = tokens, image_tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, image_pe)
        attended = self.final_attn_token_to_image(queries + tokens, keys + image_pe, keys)
        return self.norm_final_attn(queries + attended), keys


class MLP(nn.Module):
    """``depth`` Linear layers with ReLU between them. Shapes: (..., c_in) -> (..., c_out)."""

    def __init__(self, c_in: int, hidden: int, c_out: int, depth: int) -> None:
        super().__init__()
        sizes = [c_in] + [hidden] * (depth - 1) + [c_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class MaskDecoder(nn.Module):
    """Single-mask SAM decoder (the ``multimask_output=False`` path).

    Only mask token 0, hyper-network 0 and IoU output 0 are computed; the three multimask hyper-networks stay in
    the module so that the checkpoint loads strictly (they are not part of any exported graph).
    """

    def __init__(self, cfg: HeadsConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or HeadsConfig()
        self.cfg = cfg
        c = cfg.dim
        self.transformer = TwoWayTransformer(cfg)
        self.iou_token = nn.Embedding(1, c)
        self.mask_tokens = nn.Embedding(cfg.mask_tokens, c)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(c, c, c // 8, 3) for _ in range(cfg.mask_tokens))
        self.iou_prediction_head = MLP(c, cfg.iou_hidden, cfg.mask_tokens, 3)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, prompt_tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for B prompts on one image.

        Args:
            image_embedding: (1, C, H, W) encoder output plus the dense prompt embedding.
            image_pe: (1, H*W, C) positional encoding of the grid.
            prompt_tokens: (B, P, C) sparse prompt tokens (P = 2 corners per box).

        Returns:
            (low-resolution logits (B, 1, 4H, 4W), predicted IoU (B, 1)).
        """
        b = prompt_tokens.shape[0]
        h, w = image_embedding.shape[2:]
        learned = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)  # (1 + mask_tokens, C)
        tokens = torch.cat([learned.unsqueeze(0).expand(b, -1, -1), prompt_tokens], dim=1)
        image_tokens = image_embedding.flatten(2).transpose(1, 2)  # (1, H*W, C)
        tokens, image_tokens = self.transformer(image_tokens, image_pe, tokens)

        grid = image_tokens.transpose(1, 2).unflatten(2, (h, w))  # (B, C, H, W)
        upscaled = self.output_upscaling(grid)  # (B, C/8, 4H, 4W)
        weights = self.output_hypernetworks_mlps[0](tokens[:, 1, :])  # (B, C/8)
        # per-box weighted sum over channels, on the 4D map: a (B, 1, C/8) @ (B, C/8, 16*H*W) product needs the map
        # planar and cost the CPU plugin a full reorder of it (the largest single node at 8 boxes)
        logits = (upscaled * weights[:, :, None, None]).sum(dim=1, keepdim=True)  # (B, 1, 4H, 4W)
        iou = self.iou_prediction_head(tokens[:, 0, :])[:, :1]
        return logits, iou
