"""Dia-LLaMA's disease branch: disease-aware attention (DAA) pools the patch features into one feature per disease,
and the disease prototype memory (DPM) scores each against an abnormal and a normal prototype.

Hub remote-code file: depends only on torch. Shapes: B batch, M patch tokens, c vision width, L diseases.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_dia_llama import DiaLlamaConfig

# ----------------------------------------------------------------------------------------------------------------------
# Disease branch: disease-aware attention (DAA) + disease prototype memory (DPM)


class DiaLlamaDiseaseBranch(nn.Module):
    """Pools patch features into one feature per disease and scores presence.

    Pooling `attention` (DAA): a learnable (L, M) weight softmaxed over the M patches → (B, L, c); its logits are
    `disease_attention_scale` · W. With `disease_attention="dynamic"` (an extension) the logits add, per volume,
    query_l · key(LN(patch feature)) / sqrt(c), so each disease can look where its finding is. With
    `disease_attention_min_intensity` (an extension) the softmax runs over the patches inside the body only
    (`body_mask`): attention cannot settle on the empty air around the patient.
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
        self.dynamic_scale = float(config.disease_attention_dynamic_scale)
        self.min_intensity = config.disease_attention_min_intensity
        self.patch_size = tuple(vc.patch_size)
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

    def body_mask(self, pixel_values: torch.Tensor) -> torch.Tensor | None:
        """(B, C, H, W, D) → (B, M) bool, the patches inside the body: those whose brightest voxel (channel mean) is
        above `disease_attention_min_intensity` (a volume with no such patch keeps them all). None when the setting
        is off or the branch has no attention."""
        if self.min_intensity is None or self.pooling != "attention":
            return None
        volume = pixel_values.float().mean(dim=1, keepdim=True)  # (B, 1, H, W, D)
        brightest = F.max_pool3d(volume, self.patch_size).flatten(1)  # (B, M), patches in (h w d) order
        inside = brightest > self.min_intensity
        return inside | ~inside.any(dim=-1, keepdim=True)

    def attention_logits(self, patch_features: torch.Tensor | None = None,
                         patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Static: (L, M) = scale · W. Dynamic with `patch_features` (B, M, c): (B, L, M), adding
        query · key / sqrt(c). With `patch_mask` (B, M) bool: (B, L, M), −inf outside the mask."""
        logits = self.attention_scale * self.attention_weights  # (L, M)
        if self.attention_kind == "dynamic" and patch_features is not None:
            keys = self.attention_key(self.attention_key_norm(patch_features))  # (B, M, c)
            query = self.attention_query.to(keys.dtype)
            # / (sqrt(c) / scale): at the default scale 1 exactly the division by sqrt(c) of earlier checkpoints
            dynamic = torch.einsum("lc,bmc->blm", query, keys) / (math.sqrt(keys.shape[-1]) / self.dynamic_scale)
            logits = logits.to(dynamic.dtype) + dynamic
        if patch_mask is not None:
            logits = logits.expand(patch_mask.shape[0], *logits.shape[-2:])  # (B, L, M)
            logits = logits.masked_fill(~patch_mask[:, None, :], float("-inf"))
        return logits

    def attention_map(self, patch_features: torch.Tensor | None = None,
                      patch_mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """Softmax weights of the disease-aware attention over the M patches: (L, M) for the static attention (and
        for the dynamic one's static part when no features are given), (B, L, M) for the dynamic one given
        `patch_features` (B, M, c) or for either given `patch_mask` (B, M) (zero outside the body). None for mean
        pooling."""
        if self.pooling != "attention":
            return None
        return self.attention_logits(patch_features, patch_mask).softmax(dim=-1)

    def pool(self, patch_features: torch.Tensor, legacy: bool = False,
             patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, M, c) → (B, L, c); with `disease_max_pooling`, plus the maximum over the M patches of each channel.
        `legacy`: the research code's inference-time pooling (see `_pool_by_kind`); `patch_mask`: see `body_mask`."""
        features = self._pool_by_kind(patch_features, legacy, patch_mask)
        if self.max_pooling:
            features = features + patch_features.amax(dim=1, keepdim=True)  # (B, L, c) + (B, 1, c)
        return features

    def _pool_by_kind(self, patch_features: torch.Tensor, legacy: bool = False,
                      patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pooling == "mean":
            num = self.classifier_weight.shape[0] if self.head == "linear" else self.abnormal_prototypes.shape[0]
            return patch_features.mean(dim=1, keepdim=True).expand(-1, num, -1)
        if self.attention_kind == "dynamic" or patch_mask is not None:
            attention = self.attention_map(patch_features, patch_mask).to(patch_features.dtype)  # (B, L, M)
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

    def forward(self, patch_features: torch.Tensor, legacy: bool = False,
                patch_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, c) → disease features (B, L, c), logits (B, L). `legacy` pools as the research code's inference;
        `patch_mask` (B, M) bool limits the attention to those patches (`body_mask`)."""
        features = self.pool(patch_features, legacy, patch_mask)
        if self.head == "linear":
            logits = (features * self.classifier_weight).sum(-1) + self.classifier_bias
            return features, logits
        return features, self.prototype_logits(features)

    def prototype_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The prototype head on pooled disease features (B, L, c) → (B, L): (cos to abnormal − cos to normal) / τ."""
        query = F.normalize(self.proj(features), dim=-1)  # (B, L, c)
        sim_abnormal = (query * F.normalize(self.abnormal_prototypes, dim=-1)).sum(-1)  # (B, L)
        sim_normal = (query * F.normalize(self.normal_prototypes, dim=-1)).sum(-1)
        return (sim_abnormal - sim_normal) / self.temperature

    def loss(self, logits: torch.Tensor, disease_labels: torch.Tensor) -> torch.Tensor:
        """2-way cross-entropy over (abnormal, normal) — equal to BCE on the logit difference. Mean over (B, L)."""
        return F.binary_cross_entropy_with_logits(logits.float(), disease_labels.float())
