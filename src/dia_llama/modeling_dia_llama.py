"""Dia-LLaMA modelling: ViT3D vision tower, perceiver resampler, disease branch and a causal LM (LLaVA layout).

Hub remote-code file: depends only on torch and transformers.

Shapes: B batch, C channels, H×W×D volume (slices last), M = (H/ph)(W/pw)(D/pd) patch tokens, c vision width,
N visual tokens (perceiver latents), L diseases, T text length, E LLM width.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_dia_llama import NO_FINDING, DiaLlamaConfig, DiaLlamaVisionConfig

# ----------------------------------------------------------------------------------------------------------------------
# Outputs


@dataclass
class DiaLlamaDiagnosis(ModelOutput):
    """Per-disease diagnosis of the disease branch.

    probabilities: (B, L) probability that each disease is present. present: (B, L) bool decisions.
    logits: (B, L) pre-sigmoid scores. attention: disease-aware attention over the M patches, (L, M) for the static
    DAA or (B, L, M) for the dynamic variant (None for mean pooling).
    disease_names: the L names, in order.
    """

    probabilities: torch.FloatTensor | None = None
    present: torch.BoolTensor | None = None
    logits: torch.FloatTensor | None = None
    attention: torch.FloatTensor | None = None
    disease_names: list | None = None

    def to_records(self) -> list[dict]:
        """One dict per case: {disease: {"probability": p, "present": bool}}."""
        probs = self.probabilities.detach().float().cpu().tolist()
        present = self.present.detach().cpu().tolist()
        return [
            {name: {"probability": p, "present": bool(x)} for name, p, x in zip(self.disease_names, pr, ps)}
            for pr, ps in zip(probs, present)
        ]


@dataclass
class DiaLlamaModelOutput(ModelOutput):
    last_hidden_state: torch.FloatTensor | None = None
    cache: object | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    image_features: torch.FloatTensor | None = None
    disease_logits: torch.FloatTensor | None = None
    disease_features: torch.FloatTensor | None = None


@dataclass
class DiaLlamaCausalLMOutput(ModelOutput):
    """`loss` = lm_loss_weight·`lm_loss` + dp_loss_weight·`dp_loss`; `disease_logits` (B, L), `disease_probs` (B, L)."""

    loss: torch.FloatTensor | None = None
    lm_loss: torch.FloatTensor | None = None
    dp_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: object | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    image_features: torch.FloatTensor | None = None
    disease_logits: torch.FloatTensor | None = None
    disease_probs: torch.FloatTensor | None = None


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
        self.norm_in = nn.LayerNorm(patch_dim, eps=config.layer_norm_eps) if config.patch_norm == "layernorm" else nn.Identity()
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


# ----------------------------------------------------------------------------------------------------------------------
# Disease branch: disease-aware attention (DAA) + disease prototype memory (DPM)


class DiaLlamaDiseaseBranch(nn.Module):
    """Pools patch features into one feature per disease and scores presence.

    Pooling `attention` (DAA): a learnable (L, M) weight softmaxed over the M patches → (B, L, c); its logits are
    `disease_attention_scale` · W. With `disease_attention="dynamic"` (an extension) the logits add, per volume,
    query_l · key(LN(patch feature)) / sqrt(c), so each disease can look where its finding is.
    Pooling `mean`: the mean patch feature, shared by all diseases.
    `disease_max_pooling` (an extension) adds the channel-wise maximum over the patches to every pooled feature.
    Head `prototype` (DPM): cosine similarity of the projected disease feature to an abnormal and a normal prototype;
    logit = (sim_abnormal − sim_normal) / τ, so sigmoid(logit) is the 2-way InfoNCE softmax of "abnormal".
    Head `linear`: one linear classifier per disease.
    """

    def __init__(self, config: DiaLlamaConfig):
        super().__init__()
        vc = config.vision_config
        num, dim = config.num_diseases, vc.hidden_size
        self.pooling, self.head = config.disease_pooling, config.diagnosis_head
        self.max_pooling = config.disease_max_pooling
        self.attention_kind = config.disease_attention
        self.attention_scale = float(config.disease_attention_scale)
        if self.pooling == "attention":
            self.attention_weights = nn.Parameter(torch.empty(num, vc.num_patches))
            if self.attention_kind == "dynamic":
                self.attention_key_norm = nn.LayerNorm(dim, eps=vc.layer_norm_eps)
                self.attention_key = nn.Linear(dim, dim)
                self.attention_query = nn.Parameter(torch.empty(num, dim))
        if self.head == "prototype":
            self.proj = nn.Linear(dim, dim)
            self.abnormal_prototypes = nn.Parameter(torch.empty(num, dim))
            self.normal_prototypes = nn.Parameter(torch.empty(num, dim))
            self.log_temperature = nn.Parameter(torch.empty(1))  # (1,) not a 0-d tensor: DeepSpeed broadcasts bytes
            self.init_temperature = config.prototype_temperature
            self.temperature_bounds = tuple(config.temperature_bounds)
        else:
            self.classifier_weight = nn.Parameter(torch.empty(num, dim))
            self.classifier_bias = nn.Parameter(torch.empty(num))

    @property
    def temperature(self) -> torch.Tensor:
        """τ, kept positive by the log parametrisation and bounded by clamping."""
        low, high = self.temperature_bounds
        return self.log_temperature.exp().clamp(low, high)

    def attention_logits(self, patch_features: torch.Tensor | None = None) -> torch.Tensor:
        """Static: (L, M) = scale · W. Dynamic with `patch_features` (B, M, c): (B, L, M), adding query · key / sqrt(c)."""
        logits = self.attention_scale * self.attention_weights  # (L, M)
        if self.attention_kind == "dynamic" and patch_features is not None:
            keys = self.attention_key(self.attention_key_norm(patch_features))  # (B, M, c)
            query = self.attention_query.to(keys.dtype)
            dynamic = torch.einsum("lc,bmc->blm", query, keys) / math.sqrt(keys.shape[-1])
            logits = logits.to(dynamic.dtype) + dynamic
        return logits

    def attention_map(self, patch_features: torch.Tensor | None = None) -> torch.Tensor | None:
        """Softmax weights of the disease-aware attention over the M patches: (L, M) for the static attention (and
        for the dynamic one's static part when no features are given), (B, L, M) for the dynamic one given
        `patch_features` (B, M, c). None for mean pooling."""
        if self.pooling != "attention":
            return None
        return self.attention_logits(patch_features).softmax(dim=-1)

    def pool(self, patch_features: torch.Tensor, legacy: bool = False) -> torch.Tensor:
        """(B, M, c) → (B, L, c); with `disease_max_pooling`, plus the maximum over the M patches of each channel.
        `legacy`: the research code's inference-time pooling (see `_pool_by_kind`)."""
        features = self._pool_by_kind(patch_features, legacy)
        if self.max_pooling:
            features = features + patch_features.amax(dim=1, keepdim=True)  # (B, L, c) + (B, 1, c)
        return features

    def _pool_by_kind(self, patch_features: torch.Tensor, legacy: bool = False) -> torch.Tensor:
        if self.pooling == "mean":
            num = self.classifier_weight.shape[0] if self.head == "linear" else self.abnormal_prototypes.shape[0]
            return patch_features.mean(dim=1, keepdim=True).expand(-1, num, -1)
        if self.attention_kind == "dynamic":
            attention = self.attention_map(patch_features).to(patch_features.dtype)  # (B, L, M)
            return torch.einsum("blm,bmc->blc", attention, patch_features)
        attention = self.attention_map().to(patch_features.dtype)  # (L, M)
        if legacy:
            # The research code's inference path (`mode='cls'`, a bug; its training path pools correctly): the
            # weighted tokens are summed over the disease axis, so disease i is judged from patch token i.
            weighted = attention.unsqueeze(-1) * patch_features.unsqueeze(1)  # (B, L, M, c)
            return weighted.sum(dim=1)[:, : attention.shape[0]]
        return torch.einsum("lm,bmc->blc", attention, patch_features)

    def selected_prototypes(self, present: torch.Tensor) -> torch.Tensor:
        """(B, L) bool → (B, L, c) the abnormal prototype where present, else the normal one."""
        return torch.where(present.unsqueeze(-1), self.abnormal_prototypes, self.normal_prototypes)

    def forward(self, patch_features: torch.Tensor, legacy: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, c) → disease features (B, L, c), logits (B, L). `legacy` pools as the research code's inference."""
        features = self.pool(patch_features, legacy)
        if self.head == "linear":
            logits = (features * self.classifier_weight).sum(-1) + self.classifier_bias
            return features, logits
        query = F.normalize(self.proj(features), dim=-1)  # (B, L, c)
        sim_abnormal = (query * F.normalize(self.abnormal_prototypes, dim=-1)).sum(-1)  # (B, L)
        sim_normal = (query * F.normalize(self.normal_prototypes, dim=-1)).sum(-1)
        return features, (sim_abnormal - sim_normal) / self.temperature

    def loss(self, logits: torch.Tensor, disease_labels: torch.Tensor) -> torch.Tensor:
        """2-way cross-entropy over (abnormal, normal) — equal to BCE on the logit difference. Mean over (B, L)."""
        return F.binary_cross_entropy_with_logits(logits.float(), disease_labels.float())


# ----------------------------------------------------------------------------------------------------------------------
# Pretrained base


class DiaLlamaPreTrainedModel(PreTrainedModel):
    config_class = DiaLlamaConfig
    config: DiaLlamaConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DiaLlamaVisionLayer", "DiaLlamaPerceiverLayer", "LlamaDecoderLayer"]
    # Loaded in float16, the vision side stays float32, as in the official inference (its `MyEmbedding` in float32
    # beside a `.half()` LLaMA): the ViT's LayerNorms, the prototypes' cosine similarities and 1/τ keep their range.
    _keep_in_fp32_modules = ["vision_tower", "resampler", "multi_modal_projector", "disease_branch"]
    _skip_keys_device_placement = ["cache"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # The loss is a per-batch mean: let the Trainer divide by gradient-accumulation steps itself.
    accepts_loss_kwargs = False

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' `save_pretrained`; for classes registered for remote code (`import dia_llama` does it) the
        config also gets the `auto_map` of both model classes and the `ct-report-generation` pipeline
        (`custom_pipelines`), and the pipeline's file is written beside the other code files."""
        if self.is_remote_code():
            from .pipeline_dia_llama import PIPELINE_TASK, CTReportGenerationPipeline  # copied as a relative import

            module = CTReportGenerationPipeline.__module__.rsplit(".", 1)[-1]
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": f"{__name__.rsplit('.', 1)[-1]}.{DiaLlamaModel.__name__}",
                "AutoModelForImageTextToText": f"{__name__.rsplit('.', 1)[-1]}.DiaLlamaForConditionalGeneration",
            }
            self.config.custom_pipelines = {PIPELINE_TASK: {
                "impl": f"{module}.{CTReportGenerationPipeline.__name__}", "pt": ["AutoModelForImageTextToText"],
                "tf": [], "type": "multimodal"}}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @property
    def dtype(self) -> torch.dtype:
        """The language model's dtype. The vision side may differ (float32 in a float16 load, see
        `_keep_in_fp32_modules`); `save_pretrained` records this one as `config.dtype`, which `dtype="auto"` loads."""
        try:
            return self.get_input_embeddings().weight.dtype
        except (AttributeError, NotImplementedError):
            return super().dtype

    def _init_weights(self, module):
        std = getattr(self.config.get_text_config(), "initializer_range", 0.02)
        if isinstance(module, DiaLlamaPositionalEmbedding3D):
            super()._init_weights(module.row_embed)
            super()._init_weights(module.col_embed)
            super()._init_weights(module.dep_embed)
            module.reset_index_buffers()
        elif isinstance(module, DiaLlamaPerceiverResampler):
            init.normal_(module.latents, mean=0.0, std=1.0)
        elif isinstance(module, DiaLlamaBlobFeatures):
            # O(1) weights, so the blob features reach the tokens at the stem's scale from the first step: at std
            # 0.02 a branch-only harness had not used them after 600 steps (lung-lesion AUC 0.48, at std 1: 0.84)
            init.normal_(module.weight, mean=0.0, std=1.0)
            init.zeros_(module.bias)
        elif isinstance(module, DiaLlamaDiseaseBranch):
            if module.pooling == "attention":
                init.zeros_(module.attention_weights)  # uniform attention at start
                if module.attention_kind == "dynamic":
                    # query · key / sqrt(c) starts with a spread of about 1 logit, so attention can start to follow
                    # the features (a near-zero query would leave the dynamic part stuck near mean pooling)
                    init.normal_(module.attention_query, mean=0.0, std=1.0)
                    init.ones_(module.attention_key_norm.weight)
                    init.zeros_(module.attention_key_norm.bias)
                    init.normal_(module.attention_key.weight, mean=0.0, std=module.attention_key.in_features ** -0.5)
                    init.zeros_(module.attention_key.bias)
            if module.head == "prototype":
                init.normal_(module.abnormal_prototypes, mean=0.0, std=1.0)
                init.normal_(module.normal_prototypes, mean=0.0, std=1.0)
                init.constant_(module.log_temperature, math.log(module.init_temperature))
            else:
                init.normal_(module.classifier_weight, mean=0.0, std=std)
                init.zeros_(module.classifier_bias)
        elif isinstance(module, DiaLlamaModel):
            if module.disease_state_embeddings is not None:
                init.normal_(module.disease_state_embeddings, mean=0.0, std=std)
        else:
            super()._init_weights(module)


class DiaLlamaModel(DiaLlamaPreTrainedModel):
    """Vision tower, perceiver, projector, disease branch and the bare language model (no LM head)."""

    def __init__(self, config: DiaLlamaConfig):
        super().__init__(config)
        text_config = config.get_text_config()
        self.vision_tower = DiaLlamaVisionTower(config.vision_config)
        self.resampler = DiaLlamaPerceiverResampler(config.vision_config)
        self.multi_modal_projector = nn.Linear(
            config.vision_config.hidden_size, text_config.hidden_size, bias=config.projector_bias
        )
        self.disease_branch = DiaLlamaDiseaseBranch(config)
        # Soft diagnostic prompts (ablations): learned per-disease state tokens, or projected prototypes.
        self.disease_state_embeddings = None
        self.prototype_projector = None
        if config.prompt_type == "token":
            self.disease_state_embeddings = nn.Parameter(torch.empty(config.num_diseases, 2, text_config.hidden_size))
        elif config.prompt_type == "feature":
            self.prototype_projector = nn.Linear(config.vision_config.hidden_size, text_config.hidden_size)
        self.language_model = AutoModel.from_config(text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    # -- vision -------------------------------------------------------------------------------------------------------
    def encode_volume(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W, D) → patch features (B, M, c), in the vision tower's dtype."""
        dtype = self.vision_tower.pos_embed.row_embed.weight.dtype
        return self.vision_tower(pixel_values.to(dtype))

    def get_image_features(self, pixel_values=None, patch_features=None) -> torch.Tensor:
        """Visual tokens projected to the LLM width: (B, N, E)."""
        if patch_features is None:
            patch_features = self.encode_volume(pixel_values)
        return self.multi_modal_projector(self.resampler(patch_features))

    def diagnose(self, pixel_values=None, patch_features=None, threshold: float | None = None) -> DiaLlamaDiagnosis:
        """`threshold`: one value for every disease; None uses `config.diagnosis_thresholds` (or 0.5 when unset)."""
        if patch_features is None:
            patch_features = self.encode_volume(pixel_values)
        # the research code has its pooling bug at inference only: `legacy_disease_pooling` applies here, not in forward
        _, logits = self.disease_branch(patch_features, legacy=self.config.legacy_disease_pooling)
        probs = torch.sigmoid(logits.float())  # (B, L)
        if threshold is None:
            thresholds = self.config.diagnosis_thresholds
            threshold = 0.5 if thresholds is None else torch.tensor(thresholds, device=probs.device)  # (L,)
        present = probs > threshold
        names = list(self.config.disease_names)
        if self.config.derive_no_finding and NO_FINDING in names:
            i = names.index(NO_FINDING)
            others = [j for j in range(len(names)) if j != i]
            probs = probs.clone()
            probs[:, i] = (1 - probs[:, others]).prod(dim=-1)
            present[:, i] = ~present[:, others].any(dim=-1)
        return DiaLlamaDiagnosis(
            probabilities=probs,
            present=present,
            logits=logits,
            attention=self.disease_branch.attention_map(patch_features),
            disease_names=list(self.config.disease_names),
        )

    # -- placeholders --------------------------------------------------------------------------------------------------
    def _scatter(self, inputs_embeds, input_ids, token_id, features, what: str, required: bool = True):
        """Fill the positions of `token_id` with `features` (B, n, E); error when the counts differ.

        `required=False` lets cached decoding steps (no placeholders left) pass features that are not needed."""
        mask = input_ids == token_id  # (B, T)
        n_tokens = int(mask.sum())
        if n_tokens == 0 and (features is None or not required):
            return inputs_embeds
        if features is None:
            raise ValueError(f"input_ids hold {n_tokens} {what} placeholder tokens but no {what} features were given")
        n_features = features.shape[0] * features.shape[1]
        if n_tokens != n_features:
            raise ValueError(
                f"{what} features and {what} tokens do not match: {n_tokens} placeholder tokens in input_ids, "
                f"{n_features} features ({features.shape[0]} × {features.shape[1]}). Build inputs with DiaLlamaProcessor."
            )
        mask = mask.unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, features.to(inputs_embeds.dtype).reshape(-1))

    def disease_prompt_embeddings(self, present: torch.Tensor) -> torch.Tensor:
        """Soft prompts for `token` / `feature` prompt types: (B, L) bool → (B, L, E)."""
        if self.config.prompt_type == "token":
            index = (~present).long()  # 0 = present, 1 = absent
            table = self.disease_state_embeddings  # (L, 2, E)
            return table.unsqueeze(0).expand(present.shape[0], -1, -1, -1).gather(
                2, index[..., None, None].expand(-1, -1, 1, table.shape[-1])
            ).squeeze(2)
        return self.prototype_projector(self.disease_branch.selected_prototypes(present))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        disease_labels: torch.Tensor | None = None,
        diagnoses: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> DiaLlamaModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        disease_logits = disease_features = None
        if pixel_values is not None:
            patch_features = self.encode_volume(pixel_values)  # (B, M, c)
            disease_features, disease_logits = self.disease_branch(patch_features)
            if image_features is None:
                image_features = self.get_image_features(patch_features=patch_features)

        if input_ids is not None:
            inputs_embeds = self._scatter(
                inputs_embeds, input_ids, self.config.image_token_id, image_features, "image",
                required=pixel_values is not None,
            )
            if self.config.prompt_type in ("token", "feature") and (input_ids == self.config.disease_token_id).any():
                # Training: ground-truth states (teacher forcing); inference: given or own diagnoses.
                if disease_labels is not None:
                    states = disease_labels > 0.5
                elif diagnoses is not None:
                    states = diagnoses.bool()
                elif disease_logits is not None:
                    states = disease_logits > 0
                else:
                    raise ValueError("disease prompt slots need disease_labels, diagnoses or pixel_values")
                inputs_embeds = self._scatter(
                    inputs_embeds, input_ids, self.config.disease_token_id, self.disease_prompt_embeddings(states),
                    "disease prompt",
                )

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return DiaLlamaModelOutput(
            last_hidden_state=outputs.last_hidden_state,
            cache=getattr(outputs, "cache", None),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_features=image_features,
            disease_logits=disease_logits,
            disease_features=disease_features,
        )


class DiaLlamaForConditionalGeneration(DiaLlamaPreTrainedModel, GenerationMixin):
    """Dia-LLaMA with a language-modelling head: diagnoses a CT volume and writes its report.

    One call: ``model.generate(**processor(volumes=[...], return_tensors="pt"))`` diagnoses each volume, expands the
    `<dx>` placeholder into the diagnostic text prompt of the model's own diagnoses and generates the report. With
    ``return_dict_in_generate=True`` the output carries `diagnoses` (a :class:`DiaLlamaDiagnosis`).
    """

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: DiaLlamaConfig):
        super().__init__(config)
        self.model = DiaLlamaModel(config)
        text_config = config.get_text_config()
        self.lm_head = nn.Linear(text_config.hidden_size, text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixel_values)

    @torch.no_grad()
    def diagnose(self, pixel_values: torch.Tensor, threshold: float | None = None) -> DiaLlamaDiagnosis:
        """Per-disease probabilities and present/absent decisions for a batch of volumes (B, C, H, W, D); `threshold`
        None uses `config.diagnosis_thresholds` (0.5 when unset)."""
        return self.model.diagnose(pixel_values=pixel_values, threshold=threshold)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        disease_labels: torch.Tensor | None = None,
        image_features: torch.FloatTensor | None = None,
        diagnoses: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> DiaLlamaCausalLMOutput:
        """`labels` (B, T): −100 outside the report; `disease_labels` (B, L) 0/1 ground truth for L_DP (and the
        teacher-forced soft prompts)."""
        kwargs.pop("num_items_in_batch", None)
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            image_features=image_features,
            disease_labels=disease_labels,
            diagnoses=diagnoses,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.suppress_input_only_tokens(self.lm_head(hidden))  # (B, T, V)

        lm_loss = dp_loss = loss = None
        if labels is not None:
            vocab = self.config.get_text_config().vocab_size
            lm_loss = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, vocab), labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100
            )
            loss = self.config.lm_loss_weight * lm_loss
        if disease_labels is not None and outputs.disease_logits is not None:
            dp_loss = self.model.disease_branch.loss(outputs.disease_logits, disease_labels.to(logits.device))
            weighted = self.config.dp_loss_weight * dp_loss
            loss = weighted if loss is None else loss + weighted
        disease_probs = torch.sigmoid(outputs.disease_logits.float()) if outputs.disease_logits is not None else None
        return DiaLlamaCausalLMOutput(
            loss=loss,
            lm_loss=lm_loss,
            dp_loss=dp_loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_features=outputs.image_features,
            disease_logits=outputs.disease_logits,
            disease_probs=disease_probs,
        )

    def input_only_token_ids(self) -> list[int]:
        """Tokens that only ever appear in the input: the placeholders (`<image>`, `<image_start>`, `<image_end>`,
        `<dx>`, `<disease>`) and padding (unless it doubles as EOS)."""
        config, text = self.config, self.config.get_text_config()
        ids = [config.image_token_id, config.image_start_token_id, config.image_end_token_id,
               config.diagnosis_token_id, config.disease_token_id]
        if text.pad_token_id is not None and text.pad_token_id != text.eos_token_id:
            ids.append(text.pad_token_id)
        vocab = text.vocab_size
        return sorted({int(i) for i in ids if i is not None and 0 <= int(i) < vocab})

    def suppress_input_only_tokens(self, logits: torch.Tensor) -> torch.Tensor:
        """Set the logits of `input_only_token_ids` to the dtype's minimum: they take no probability mass (the
        official model's LLaMA head has no rows for them), in the loss as in generation. (B, T, V) → (B, T, V)."""
        ids = self.input_only_token_ids()
        if not ids:
            return logits
        index = torch.tensor(ids, device=logits.device)
        return logits.index_fill_(-1, index, torch.finfo(logits.dtype).min)  # in place: Linear keeps no output

    # -- generation ----------------------------------------------------------------------------------------------------
    def expand_diagnosis_prompts(self, input_ids, attention_mask, present, pad_token_id):
        """Replace the single `<dx>` placeholder of each row by the diagnostic text prompt of `present` (B, L), left-padding
        the batch again. Returns new (input_ids, attention_mask)."""
        table = self.config.diagnosis_prompt_ids
        if not table:
            raise ValueError(
                "config.diagnosis_prompt_ids is empty: the diagnostic prompt token ids are written by "
                "DiaLlamaProcessor.prepare_model_config(config) (done by `dia-llama init` and training)."
            )
        dx = self.config.diagnosis_token_id
        rows = []
        for ids, mask, states in zip(input_ids.tolist(), attention_mask.tolist(), present.tolist()):
            ids = [t for t, m in zip(ids, mask) if m]  # drop padding
            if ids.count(dx) != 1:
                raise ValueError(f"each row must hold exactly one diagnosis placeholder token; found {ids.count(dx)}")
            at = ids.index(dx)
            prompt = [t for i, s in enumerate(states) for t in table[i][0 if s else 1]]
            rows.append(ids[:at] + prompt + ids[at + 1 :])
        width = max(len(r) for r in rows)
        new_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long, device=input_ids.device)
        new_mask = torch.zeros((len(rows), width), dtype=torch.long, device=input_ids.device)
        for i, r in enumerate(rows):
            new_ids[i, width - len(r) :] = torch.tensor(r, device=input_ids.device)
            new_mask[i, width - len(r) :] = 1
        return new_ids, new_mask

    @torch.no_grad()
    def generate(self, input_ids=None, pixel_values=None, attention_mask=None, diagnoses=None, **kwargs):
        """Diagnose (unless `diagnoses` (B, L) are given), build the diagnostic prompt, then generate the report."""
        diagnosis = None
        if pixel_values is not None:
            patch_features = self.model.encode_volume(pixel_values)
            kwargs["image_features"] = self.model.get_image_features(patch_features=patch_features)
            diagnosis = self.model.diagnose(patch_features=patch_features)
            if diagnoses is None:
                diagnoses = diagnosis.present
            else:
                diagnoses = torch.as_tensor(diagnoses, device=patch_features.device).bool()
                diagnosis.present = diagnoses
        dx = self.config.diagnosis_token_id
        if input_ids is not None and dx is not None and (input_ids == dx).any():
            if diagnoses is None:
                raise ValueError("input_ids hold a diagnosis placeholder: pass pixel_values or diagnoses")
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            pad = self.generation_config.pad_token_id
            pad = self.config.get_text_config().pad_token_id if pad is None else pad
            input_ids, attention_mask = self.expand_diagnosis_prompts(input_ids, attention_mask, diagnoses, pad or 0)
        if diagnoses is not None and self.config.prompt_type in ("token", "feature"):
            kwargs["diagnoses"] = diagnoses
        output = super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if diagnosis is not None and isinstance(output, ModelOutput):
            output["diagnoses"] = diagnosis
        return output


__all__ = [
    "DiaLlamaPreTrainedModel",
    "DiaLlamaModel",
    "DiaLlamaForConditionalGeneration",
    "DiaLlamaDiagnosis",
    "DiaLlamaCausalLMOutput",
]
