"""Dia-LLaMA's vision side: the ViT3D tower (RadFM layout, or a convolutional stem), blob features and the perceiver
resampler.

Hub remote-code file: depends only on torch and transformers. Shapes: B batch, C channels, H×W×D volume (slices
last), M patch tokens, c vision width, N visual tokens.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_dia_llama import DiaLlamaVisionConfig

# ----------------------------------------------------------------------------------------------------------------------
# ViT3D (RadFM layout)


def patchify_volume(pixel_values: torch.Tensor, patch_size) -> torch.Tensor:
    """(B, C, H, W, D) → (B, M, ph·pw·pd·C), patches in (h w d) order, channel fastest inside a patch (RadFM)."""
    b, c, hh, ww, dd = pixel_values.shape
    ph, pw, pd = patch_size
    x = pixel_values.reshape(b, c, hh // ph, ph, ww // pw, pw, dd // pd, pd)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, h, w, d, ph, pw, pd, C)
    return x.reshape(b, (hh // ph) * (ww // pw) * (dd // pd), ph * pw * pd * c)


class DiaLlamaPatchEmbedding(nn.Module):
    """LayerNorm over the raw patch → Linear → LayerNorm (RadFM's `to_patch_embedding`)."""

    def __init__(self, config: DiaLlamaVisionConfig):
        super().__init__()
        ph, pw, pd = config.patch_size
        patch_dim = ph * pw * pd * config.num_channels
        self.patch_size = tuple(config.patch_size)
        self.norm_in = (nn.LayerNorm(patch_dim, eps=config.layer_norm_eps) if config.patch_norm == "layernorm"
                        else nn.Identity())
        self.proj = nn.Linear(patch_dim, config.hidden_size)
        self.norm_out = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = patchify_volume(pixel_values, self.patch_size)  # (B, M, patch_dim)
        return self.norm_out(self.proj(self.norm_in(patches)))  # (B, M, c)


class DiaLlamaConvStemLayer(nn.Module):
    """Conv3d → BatchNorm → GELU. Per axis: kernel 4 at stride 2, kernel 3 at stride 1, padding 1, so output voxel i
    is centred on input position 2i + 0.5 (or i): after the stem each token is centred on its patch."""

    def __init__(self, in_channels: int, out_channels: int, stride, eps: float):
        super().__init__()
        kernel = tuple(4 if s == 2 else 3 for s in stride)
        # no bias: the BatchNorm after it removes any constant (its gradient would be pure float noise)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=kernel, stride=tuple(stride), padding=1,
                              bias=False)
        self.norm = nn.BatchNorm3d(out_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(self.conv(x)))


class DiaLlamaConvPatchEmbedding(nn.Module):
    """Convolutional stem (`patch_embedding="conv"`, an extension): each layer halves every axis whose patch size is
    not reached yet, so (B, C, H, W, D) → (B, c, H/ph, W/pw, D/pd) → tokens (B, M, c) in the linear embedding's
    (h w d) order."""

    def __init__(self, config: DiaLlamaVisionConfig):
        super().__init__()
        widths = [config.num_channels, *config.conv_stem_channels, config.hidden_size]
        self.layers = nn.ModuleList(
            DiaLlamaConvStemLayer(in_channels, out_channels, stride, config.layer_norm_eps)
            for (in_channels, out_channels), stride in zip(itertools.pairwise(widths), config.conv_stem_strides)
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values
        for layer in self.layers:
            x = layer(x)  # (B, c_i, H_i, W_i, D_i)
        return x.flatten(2).transpose(1, 2)  # (B, M, c)


PATCH_EMBEDDING_CLASSES = {"linear": DiaLlamaPatchEmbedding, "conv": DiaLlamaConvPatchEmbedding}


def log_frequency_response(shape, sigma, device=None) -> torch.Tensor:
    """Negated Laplacian of a Gaussian of widths `sigma` (voxels per axis) on the rfftn grid of `shape` (H, W, D):
    (H, W, D//2+1), zero at DC, so a bright blob of about the filter's size responds positively."""
    axes = [torch.fft.fftfreq(n, device=device) for n in shape[:-1]] + [torch.fft.rfftfreq(shape[-1], device=device)]
    omega = torch.meshgrid(*[2 * math.pi * f.double() for f in axes], indexing="ij")
    squared = sum(w**2 for w in omega)
    gaussian = torch.exp(-0.5 * sum((s * w) ** 2 for s, w in zip(sigma, omega)))
    return (squared * gaussian).float()


class DiaLlamaBlobFeatures(nn.Module):
    """Blob features (`blob_filter_sigmas`, an extension): per patch, the maximum of a LoG blob filter at each
    scale (by FFT, on the channel mean of the volume), embedded into the token width: (B, C, H, W, D) → (B, M, c)."""

    # the filter responses of a [0, 1]-scaled volume are ~0.1 for a dense spot; this gain brings them near 1
    response_gain = 10.0

    def __init__(self, config: DiaLlamaVisionConfig):
        super().__init__()
        self.sigmas = [tuple(s) for s in config.blob_filter_sigmas]
        self.patch_size = tuple(config.patch_size)
        # a Linear's parameters held here (an nn.Linear child would keep its default init: see _init_weights)
        self.weight = nn.Parameter(torch.empty(config.hidden_size, len(self.sigmas)))
        self.bias = nn.Parameter(torch.empty(config.hidden_size))

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W, D) → per-patch filter maxima (B, M, S), before the embedding."""
        x = pixel_values.float().mean(dim=1, keepdim=True)  # (B, 1, H, W, D)
        shape = tuple(x.shape[2:])
        response = torch.stack([log_frequency_response(shape, s, x.device) for s in self.sigmas])  # (S, H, W, D//2+1)
        spectrum = torch.fft.rfftn(x, dim=(2, 3, 4))  # (B, 1, H, W, D//2+1)
        blobs = torch.fft.irfftn(spectrum * response, s=shape, dim=(2, 3, 4))  # (B, S, H, W, D)
        pooled = F.max_pool3d(blobs * self.response_gain, self.patch_size)  # (B, S, h, w, d)
        return pooled.flatten(2).transpose(1, 2)  # (B, M, S)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.features(pixel_values)  # (B, M, S)
        return F.linear(features.to(self.weight.dtype), self.weight, self.bias)  # (B, M, c)


class DiaLlamaPositionalEmbedding3D(nn.Module):
    """Learned row / column / depth tables, concatenated to the vision width; read at a stride on small grids."""

    def __init__(self, config: DiaLlamaVisionConfig):
        super().__init__()
        (rows, cols, deps), (dr, dc, dd) = config.pos_table_size, config.pos_embed_dims
        self.row_embed = nn.Embedding(rows, dr)
        self.col_embed = nn.Embedding(cols, dc)
        self.dep_embed = nn.Embedding(deps, dd)
        self.grid_and_tables = list(zip(("row", "col", "dep"), config.grid_size, (rows, cols, deps)))
        for name, n, table in self.grid_and_tables:
            self.register_buffer(f"{name}_index", self.table_index(n, table), persistent=False)

    @staticmethod
    def table_index(n: int, table: int) -> torch.Tensor:
        """RadFM reads a table of `table` rows at positions (k+1)·(table // n) − 1 for a grid of n."""
        return (torch.arange(n) + 1) * (table // n) - 1

    def reset_index_buffers(self) -> None:
        for name, n, table in self.grid_and_tables:
            init.copy_(getattr(self, f"{name}_index"), self.table_index(n, table))

    def forward(self) -> torch.Tensor:
        h, w, d = self.row_index.numel(), self.col_index.numel(), self.dep_index.numel()
        row = self.row_embed(self.row_index)[:, None, None, :].expand(h, w, d, -1)
        col = self.col_embed(self.col_index)[None, :, None, :].expand(h, w, d, -1)
        dep = self.dep_embed(self.dep_index)[None, None, :, :].expand(h, w, d, -1)
        return torch.cat([row, col, dep], dim=-1).reshape(h * w * d, -1)  # (M, c)


class DiaLlamaVisionAttention(nn.Module):
    def __init__(self, config: DiaLlamaVisionConfig):
        super().__init__()
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        inner = self.num_heads * self.head_dim
        self.qkv = nn.Linear(config.hidden_size, 3 * inner, bias=False)
        self.out_proj = nn.Linear(inner, config.hidden_size)
        self.dropout = config.hidden_dropout_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m, _ = x.shape
        q, k, v = self.qkv(x).view(b, m, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3×(B, h, M, dh)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, M, dh)
        out = self.out_proj(out.transpose(1, 2).reshape(b, m, -1))
        return F.dropout(out, self.dropout, self.training)


class DiaLlamaVisionMLP(nn.Module):
    def __init__(self, config: DiaLlamaVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = config.hidden_dropout_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(F.gelu(self.fc1(x)), self.dropout, self.training)
        return F.dropout(self.fc2(x), self.dropout, self.training)


class DiaLlamaVisionLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block."""

    def __init__(self, config: DiaLlamaVisionConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = DiaLlamaVisionAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = DiaLlamaVisionMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class DiaLlamaVisionTower(nn.Module):
    """ViT3D: (B, C, H, W, D) → patch features (B, M, c). No final norm (as RadFM)."""

    def __init__(self, config: DiaLlamaVisionConfig):
        super().__init__()
        self.config = config
        self.patch_embed = PATCH_EMBEDDING_CLASSES[config.patch_embedding](config)
        self.pos_embed = DiaLlamaPositionalEmbedding3D(config)
        self.blob_features = DiaLlamaBlobFeatures(config) if config.blob_filter_sigmas else None
        self.layers = nn.ModuleList(DiaLlamaVisionLayer(config) for _ in range(config.num_hidden_layers))
        self.dropout = config.hidden_dropout_prob

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        expected = (self.config.num_channels, *self.config.volume_size)
        if pixel_values.ndim != 5 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape (B, {', '.join(map(str, expected))}) = (B, C, H, W, D); "
                f"got {tuple(pixel_values.shape)}. Use DiaLlamaVolumeProcessor to prepare volumes."
            )
        x = self.patch_embed(pixel_values) + self.pos_embed()  # (B, M, c)
        if self.blob_features is not None:
            x = x + self.blob_features(pixel_values).to(x.dtype)
        x = F.dropout(x, self.dropout, self.training)
        for layer in self.layers:
            x = layer(x)
        return x


# ----------------------------------------------------------------------------------------------------------------------
# Perceiver resampler


class DiaLlamaPerceiverAttention(nn.Module):
    """Latents attend to [media; latents]."""

    def __init__(self, config: DiaLlamaVisionConfig):
        super().__init__()
        dim, self.heads, self.head_dim = config.hidden_size, config.perceiver_heads, config.perceiver_head_dim
        inner = self.heads * self.head_dim
        self.norm_media = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.norm_latents = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        media, latents = self.norm_media(media), self.norm_latents(latents)  # (B, M, c), (B, N, c)
        b, n, _ = latents.shape
        kv_input = torch.cat([media, latents], dim=1)  # (B, M+N, c)
        q = self.to_q(latents).view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, h, N, dh)
        k, v = self.to_kv(kv_input).view(b, -1, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, dh)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class DiaLlamaPerceiverLayer(GradientCheckpointingLayer):
    def __init__(self, config: DiaLlamaVisionConfig):
        super().__init__()
        dim = config.hidden_size
        self.attn = DiaLlamaPerceiverAttention(config)
        self.ff_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.ff_in = nn.Linear(dim, dim * config.perceiver_ff_mult, bias=False)
        self.ff_out = nn.Linear(dim * config.perceiver_ff_mult, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        latents = latents + self.attn(media, latents)
        return latents + self.ff_out(F.gelu(self.ff_in(self.ff_norm(latents))))


class DiaLlamaPerceiverResampler(nn.Module):
    """(B, M, c) patch features → (B, N, c) visual tokens."""

    def __init__(self, config: DiaLlamaVisionConfig):
        super().__init__()
        self.latents = nn.Parameter(torch.empty(config.num_latents, config.hidden_size))
        self.layers = nn.ModuleList(DiaLlamaPerceiverLayer(config) for _ in range(config.perceiver_depth))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, media: torch.Tensor) -> torch.Tensor:
        latents = self.latents.unsqueeze(0).expand(media.shape[0], -1, -1)  # (B, N, c)
        for layer in self.layers:
            latents = layer(media, latents)
        return self.norm(latents)
