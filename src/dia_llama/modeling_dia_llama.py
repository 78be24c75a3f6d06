"""Dia-LLaMA modelling: ViT3D vision tower, perceiver resampler, disease branch and a causal LM (LLaVA layout).

Hub remote-code file (with its siblings `modeling_dia_llama_vision.py` and `modeling_dia_llama_disease.py`): depends
only on torch and transformers.

Shapes: B batch, C channels, H×W×D volume (slices last), M = (H/ph)(W/pw)(D/pd) patch tokens, c vision width,
N visual tokens (perceiver latents), L diseases, T text length, E LLM width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_dia_llama import NO_FINDING, DiaLlamaConfig
from .modeling_dia_llama_disease import DiaLlamaDiseaseBranch
from .modeling_dia_llama_vision import (  # noqa: F401  (public names of this module)
    PATCH_EMBEDDING_CLASSES,
    DiaLlamaBlobFeatures,
    DiaLlamaConvPatchEmbedding,
    DiaLlamaPatchEmbedding,
    DiaLlamaPerceiverResampler,
    DiaLlamaPositionalEmbedding3D,
    DiaLlamaVisionLayer,
    DiaLlamaVisionTower,
    log_frequency_response,
    patchify_volume,
)

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

    def disease_patch_mask(self, pixel_values=None) -> torch.Tensor | None:
        """(B, M) bool, the patches the disease-aware attention may look at (`disease_attention_min_intensity`), or
        None for all of them. Needs `pixel_values` when the setting is on."""
        if self.config.disease_attention_min_intensity is None or self.config.disease_pooling != "attention":
            return None
        if pixel_values is None:
            raise ValueError("this model's disease attention looks inside the body only "
                             "(disease_attention_min_intensity): pass pixel_values as well as patch_features")
        return self.disease_branch.body_mask(pixel_values)

    def diagnose(self, pixel_values=None, patch_features=None, threshold: float | None = None) -> DiaLlamaDiagnosis:
        """`threshold`: one value for every disease; None uses `config.diagnosis_thresholds` (or 0.5 when unset).
        `patch_features` (B, M, c), when already computed, spare the vision tower."""
        if patch_features is None:
            patch_features = self.encode_volume(pixel_values)
        patch_mask = self.disease_patch_mask(pixel_values)  # (B, M) or None
        # the research code has its pooling bug at inference only: `legacy_disease_pooling` applies here, not in forward
        _, logits = self.disease_branch(patch_features, legacy=self.config.legacy_disease_pooling,
                                        patch_mask=patch_mask)
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
            attention=self.disease_branch.attention_map(patch_features, patch_mask),
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
                f"{n_features} features ({features.shape[0]} × {features.shape[1]}). "
                "Build inputs with DiaLlamaProcessor."
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
            disease_features, disease_logits = self.disease_branch(
                patch_features, patch_mask=self.disease_patch_mask(pixel_values))
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
                logits[:, :-1].float().reshape(-1, vocab), labels[:, 1:].reshape(-1).to(logits.device),
                ignore_index=-100
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
        """Replace the single `<dx>` placeholder of each row by the diagnostic text prompt of `present` (B, L),
        left-padding the batch again. Returns new (input_ids, attention_mask)."""
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
            diagnosis = self.model.diagnose(pixel_values=pixel_values, patch_features=patch_features)
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
