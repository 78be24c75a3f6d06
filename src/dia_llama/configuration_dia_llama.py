"""Configuration of Dia-LLaMA (vision tower + disease branch + causal LM).

Hub remote-code file: depends only on transformers.
"""

import math

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# The 14 CheXpert observations in CheXbert's column order (lower case, as in the paper's prompts).
CHEXPERT_14 = [
    "enlarged cardiomediastinum",
    "cardiomegaly",
    "lung opacity",
    "lung lesion",
    "edema",
    "consolidation",
    "pneumonia",
    "atelectasis",
    "pneumothorax",
    "pleural effusion",
    "pleural other",
    "fracture",
    "support devices",
    "no finding",
]

# The 18 CT-RATE multi-abnormality labels, in the order of its labels CSV.
CT_RATE_18 = [
    "medical material",
    "arterial wall calcification",
    "cardiomegaly",
    "pericardial effusion",
    "coronary artery wall calcification",
    "hiatal hernia",
    "lymphadenopathy",
    "emphysema",
    "atelectasis",
    "lung nodule",
    "lung opacity",
    "pulmonary fibrotic sequela",
    "pleural effusion",
    "mosaic attenuation pattern",
    "peribronchial thickening",
    "consolidation",
    "bronchiectasis",
    "interlobular septal thickening",
]

DISEASE_SETS = {"chexpert14": CHEXPERT_14, "ctrate18": CT_RATE_18}
NO_FINDING = "no finding"

DEFAULT_INSTRUCTION = (
    "Based on the above visual information and some key abnormal information related to specific diseases, "
    "please generate a complete medical report corresponding to this CT image. Providing a comprehensive report "
    "which contains detailed information about the anatomical structures and any abnormalities is essential. "
)
DEFAULT_PROMPT_TEMPLATE = 'The "{disease}" is {state}. '

DISEASE_POOLINGS = ("attention", "mean")
DISEASE_ATTENTIONS = ("static", "dynamic")
DIAGNOSIS_HEADS = ("prototype", "linear")
PROMPT_TYPES = ("text", "none", "token", "feature")
PATCH_EMBEDDINGS = ("linear", "conv")


def resolve_disease_names(disease_names) -> list[str]:
    """A named set (`"chexpert14"`, `"ctrate18"`) or an explicit list → list of lower-case names."""
    if isinstance(disease_names, str):
        if disease_names not in DISEASE_SETS:
            raise ValueError(f"unknown disease set {disease_names!r}; choose one of {sorted(DISEASE_SETS)} or a list")
        return list(DISEASE_SETS[disease_names])
    names = [str(n).strip().lower() for n in disease_names]
    if not names:
        raise ValueError("disease_names must not be empty")
    if len(set(names)) != len(names):
        raise ValueError(f"disease_names has duplicates: {names}")
    return names


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class DiaLlamaVisionConfig(PreTrainedConfig):
    """ViT3D (RadFM layout) + perceiver resampler.

    Volumes are (C, H, W, D) with slices last. The ViT cuts `patch_size` = (ph, pw, pd) patches, giving
    M = (H/ph)(W/pw)(D/pd) tokens of width `hidden_size`. Positional tables follow RadFM: `row`/`col`
    tables of `pos_table_size` = (16, 16, 128) rows × hidden/3 (the depth table takes the remainder),
    read at a stride when the grid is smaller, so RadFM / Dia-LLaMA weights import as they are.
    """

    model_type = "dia_llama_vision"
    base_config_key = "vision_config"

    volume_size: list[int] | tuple[int, ...] = (256, 256, 64)
    num_channels: int = 3
    patch_size: list[int] | tuple[int, ...] = (32, 32, 4)
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    head_dim: int = 64
    intermediate_size: int = 2048
    hidden_dropout_prob: float = 0.1
    pos_table_size: list[int] | tuple[int, ...] = (16, 16, 128)
    layer_norm_eps: float = 1e-5
    # RadFM normalises each raw patch with a LayerNorm, which removes its mean intensity; "none" keeps it
    patch_norm: str = "layernorm"
    # How patches become tokens. "linear" (RadFM): LayerNorm → Linear on each flattened patch. "conv" (an extension,
    # not in the paper): Conv3d → BatchNorm → GELU layers of widths `conv_stem_channels` then `hidden_size`, each
    # halving every axis whose patch size is not yet reached; same (h, w, d) token grid, each token centred on its
    # patch. It learns small, shifted findings from far fewer volumes than the linear embedding (the `tiny` preset).
    patch_embedding: str = "linear"
    conv_stem_channels: list[int] | tuple[int, ...] = (16, 32, 64)
    # Blob features (an extension, not in the paper): per patch, the maximum response of a Laplacian-of-Gaussian
    # filter at each scale of `blob_filter_sigmas` ((h, w, d) in voxels; empty: off), embedded by a Linear and added
    # to the patch tokens. A LoG filter answers most to a compact dense spot about its size in air: a nodule.
    blob_filter_sigmas: list | tuple = ()
    # perceiver resampler
    perceiver_depth: int = 6
    num_latents: int = 32
    perceiver_heads: int = 8
    perceiver_head_dim: int = 64
    perceiver_ff_mult: int = 4
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self.volume_size = [int(v) for v in self.volume_size]
        self.patch_size = [int(v) for v in self.patch_size]
        self.pos_table_size = [int(v) for v in self.pos_table_size]
        self.conv_stem_channels = [int(v) for v in self.conv_stem_channels]
        self.blob_filter_sigmas = [[float(v) for v in sigma] for sigma in self.blob_filter_sigmas]
        super().__post_init__(**kwargs)
        for sigma in self.blob_filter_sigmas:
            _require(len(sigma) == 3 and all(v > 0 for v in sigma),
                     f"each blob_filter_sigmas entry must be three positive (h, w, d) widths in voxels, got {sigma}")
        _require(len(self.volume_size) == 3, f"volume_size must be (H, W, D), got {self.volume_size}")
        _require(len(self.patch_size) == 3, f"patch_size must be (ph, pw, pd), got {self.patch_size}")
        for axis, (v, p) in enumerate(zip(self.volume_size, self.patch_size)):
            _require(p > 0 and v > 0 and v % p == 0,
                     f"volume_size[{axis}]={v} must be a positive multiple of patch_size[{axis}]={p}")
        for axis, (n, t) in enumerate(zip(self.grid_size, self.pos_table_size)):
            _require(n <= t,
                     f"patch grid {self.grid_size} exceeds positional table {self.pos_table_size} on axis {axis}")
        _require(self.hidden_size % 3 == 0 or self.hidden_size >= 3, "hidden_size too small")
        _require(self.num_channels >= 1, "num_channels must be >= 1")
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim", "intermediate_size",
                     "perceiver_depth", "num_latents", "perceiver_heads", "perceiver_head_dim", "perceiver_ff_mult"):
            _require(int(getattr(self, name)) > 0, f"{name} must be positive, got {getattr(self, name)}")
        _require(0.0 <= self.hidden_dropout_prob < 1.0, "hidden_dropout_prob must be in [0, 1)")
        _require(self.patch_norm in ("layernorm", "none"),
                 f"patch_norm must be layernorm or none, got {self.patch_norm!r}")
        _require(self.patch_embedding in PATCH_EMBEDDINGS,
                 f"patch_embedding must be one of {PATCH_EMBEDDINGS}, got {self.patch_embedding!r}")
        if self.patch_embedding == "conv":
            layers = len(self.conv_stem_channels) + 1
            _require(all(c > 0 for c in self.conv_stem_channels), "conv_stem_channels must be positive")
            reached = [math.prod(s[axis] for s in self.conv_stem_strides) for axis in range(3)]
            for axis, p in enumerate(self.patch_size):
                _require(reached[axis] == p,
                         f"patch_embedding='conv' halves each axis per layer: patch_size[{axis}]={p} must be a power "
                         f"of 2 and at most 2**{layers} (len(conv_stem_channels) + 1 layers)")

    @property
    def conv_stem_strides(self) -> list[list[int]]:
        """Per layer of the convolutional stem, the (h, w, d) stride: 2 on every axis whose patch size is not yet
        reached, else 1 (len(conv_stem_channels) + 1 layers)."""
        remaining, strides = list(self.patch_size), []
        for _ in range(len(self.conv_stem_channels) + 1):
            stride = [2 if r > 1 else 1 for r in remaining]
            remaining = [r // s for r, s in zip(remaining, stride)]
            strides.append(stride)
        return strides

    @property
    def grid_size(self) -> list[int]:
        """Patch grid (h, w, d)."""
        return [v // p for v, p in zip(self.volume_size, self.patch_size)]

    @property
    def num_patches(self) -> int:
        h, w, d = self.grid_size
        return h * w * d

    @property
    def pos_embed_dims(self) -> list[int]:
        """Widths of the row / col / depth tables (RadFM: 256 each for width 768)."""
        third = self.hidden_size // 3
        return [third, third, self.hidden_size - 2 * third]


class DiaLlamaConfig(PreTrainedConfig):
    """Dia-LLaMA: a ViT3D vision tower, a perceiver resampler, the disease branch (disease-aware attention and
    disease prototype memory) and a causal language model.

    Loss weights follow the paper's released code, ``loss = lm_loss_weight * L_LM + dp_loss_weight * L_DP`` with
    ``dp_loss_weight = 4`` (the paper's text writes ``L_DP + λ·L_LM``; set the weights to match either).

    Token ids: `image_token_id` (the N visual placeholders), `image_start_token_id` / `image_end_token_id` (around
    them), `diagnosis_token_id` (one `<dx>` placeholder that `generate` expands into the diagnostic text prompt of
    the model's own diagnoses, using `diagnosis_prompt_ids`: per disease, the token ids of its present and absent
    sentence, written by the processor), `disease_token_id` (the L soft-prompt slots of the `token`/`feature`
    ablations).

    Ablation switches (paper Tables 2-3): ``disease_pooling`` (`attention` = DAA | `mean`), ``disease_attention``
    (`static` = the paper's DAA | `dynamic`, input-dependent, an extension), ``diagnosis_head`` (`prototype` = DPM |
    `linear`), ``prompt_type`` (`text` = diagnostic text prompts | `none` | `token` learned
    per-disease present/absent embeddings | `feature` the matched prototype vectors as soft prompts).
    """

    model_type = "dia_llama"
    attribute_map = {"image_token_index": "image_token_id"}
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=DiaLlamaVisionConfig),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 32000
    image_start_token_id: int | None = None
    image_end_token_id: int | None = None
    diagnosis_token_id: int | None = None
    disease_token_id: int | None = None
    diagnosis_prompt_ids: list | None = None
    disease_names: list[str] | str = "chexpert14"
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    present_word: str = "positive"
    absent_word: str = "negative"
    instruction: str = DEFAULT_INSTRUCTION
    dp_loss_weight: float = 4.0
    lm_loss_weight: float = 1.0
    disease_pooling: str = "attention"
    diagnosis_head: str = "prototype"
    prompt_type: str = "text"
    # Disease-aware attention. `static` (the paper): one learned (L, M) logit table, the same for every volume.
    # `dynamic` (an extension, not in the paper): logits = static + per-disease query · key(patch feature) / sqrt(c),
    # so a disease can attend to wherever its finding is in this volume.
    disease_attention: str = "static"
    # Multiplier on the static logit table (a reparametrisation: logits = scale · W). With Adam, W moves ~lr per
    # step whatever its gradient, so the logits move ~scale·lr: scale 1 (the paper) leaves a zero-initialised table
    # at mean pooling for thousands of steps at lr 1e-3; a larger scale acts as a learning-rate multiplier for it.
    disease_attention_scale: float = 1.0
    # Multiplier on the dynamic term (query · key / sqrt(c)) of `disease_attention="dynamic"`. At 1 the term starts
    # with a standard deviation of ~1 over the patches: a near-uniform softmax, where one small finding gets a ~1/M
    # share of the pooled feature; a larger value starts the attention selective.
    disease_attention_dynamic_scale: float = 1.0
    # Add the element-wise maximum over all patch features to every disease's pooled feature (an extension). An
    # attention that starts near mean pooling gives one small finding a 1/M share of the pooled feature, too little
    # to learn from; the maximum carries it from the first step.
    disease_max_pooling: bool = False
    # Body-only disease attention (an extension): the softmax of the disease-aware attention runs over the patches
    # whose brightest voxel (in the volume processor's output units) is above this value; None (the paper): all
    # patches. With a redundant path such as max pooling, a softmax that must put its mass somewhere settles on the
    # empty air around the patient (constant tokens that change nothing: an attention sink); inside the body it pools
    # anatomy, where the finding is. Tiny preset: 0.05, i.e. -900 HU in its -1000..1000 HU window.
    disease_attention_min_intensity: float | None = None
    prototype_temperature: float = 0.07
    # "no finding" by definition (CheXpert, the labelers, the synthetic benchmark) means no other class is present.
    # True: `diagnose` derives it from the other classes' decisions (probability ∏(1 − p_i)) instead of its own
    # prototype; False (the paper): it is scored like any other class.
    derive_no_finding: bool = False
    # Per-disease decision thresholds on the probability (None: 0.5, the paper's "closer to the abnormal prototype");
    # `dia-llama train --calibrate_thresholds` sets them on the validation split (dia_llama.evaluation.calibration).
    diagnosis_thresholds: list[float] | None = None
    temperature_bounds: list[float] | tuple[float, float] = (0.01, 1.0)
    projector_bias: bool = True
    # The research code's inference-time pooling bug (disease i judged from patch token i), for its released weights:
    # applied by `diagnose` / `generate` only, since its training path pools correctly. Off: pool over the patches.
    legacy_disease_pooling: bool = False
    # the pretrained language model this one started from: a Hub id or a local folder's name (never a path)
    language_model_source: str | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        self.disease_names = resolve_disease_names(self.disease_names)
        self.temperature_bounds = [float(v) for v in self.temperature_bounds]
        super().__post_init__(**kwargs)
        _require(self.disease_pooling in DISEASE_POOLINGS,
                 f"disease_pooling must be one of {DISEASE_POOLINGS}, got {self.disease_pooling!r}")
        _require(self.disease_attention in DISEASE_ATTENTIONS,
                 f"disease_attention must be one of {DISEASE_ATTENTIONS}, got {self.disease_attention!r}")
        _require(float(self.disease_attention_scale) > 0,
                 f"disease_attention_scale must be > 0, got {self.disease_attention_scale}")
        _require(float(self.disease_attention_dynamic_scale) > 0,
                 f"disease_attention_dynamic_scale must be > 0, got {self.disease_attention_dynamic_scale}")
        _require(not (self.legacy_disease_pooling and self.disease_attention != "static"),
                 "legacy_disease_pooling reproduces the research code and needs disease_attention='static'")
        _require(not (self.legacy_disease_pooling and self.disease_max_pooling),
                 "legacy_disease_pooling reproduces the research code and needs disease_max_pooling=False")
        _require(not (self.legacy_disease_pooling and self.disease_attention_min_intensity is not None),
                 "legacy_disease_pooling reproduces the research code and needs disease_attention_min_intensity=None")
        if self.disease_attention_min_intensity is not None:
            _require(math.isfinite(float(self.disease_attention_min_intensity)),
                     f"disease_attention_min_intensity must be a finite number or None, got "
                     f"{self.disease_attention_min_intensity}")
            self.disease_attention_min_intensity = float(self.disease_attention_min_intensity)
        _require(self.diagnosis_head in DIAGNOSIS_HEADS,
                 f"diagnosis_head must be one of {DIAGNOSIS_HEADS}, got {self.diagnosis_head!r}")
        _require(self.prompt_type in PROMPT_TYPES,
                 f"prompt_type must be one of {PROMPT_TYPES}, got {self.prompt_type!r}")
        _require(self.dp_loss_weight >= 0 and self.lm_loss_weight >= 0, "loss weights must be >= 0")
        low, high = self.temperature_bounds
        _require(0 < low < high, f"temperature_bounds must satisfy 0 < low < high, got {self.temperature_bounds}")
        _require(low <= self.prototype_temperature <= high,
                 f"prototype_temperature {self.prototype_temperature} outside temperature_bounds "
                 f"{self.temperature_bounds}")
        _require("{disease}" in self.prompt_template and "{state}" in self.prompt_template,
                 "prompt_template must contain {disease} and {state}")
        _require(self.present_word != self.absent_word, "present_word and absent_word must differ")
        if self.diagnosis_thresholds is not None:
            self.diagnosis_thresholds = [float(t) for t in self.diagnosis_thresholds]
            _require(len(self.diagnosis_thresholds) == self.num_diseases
                     and all(0 < t < 1 for t in self.diagnosis_thresholds),
                     f"diagnosis_thresholds must hold {self.num_diseases} values in (0, 1), "
                     f"got {self.diagnosis_thresholds}")
        if self.diagnosis_prompt_ids is not None:
            _require(len(self.diagnosis_prompt_ids) == self.num_diseases
                     and all(len(pair) == 2 for pair in self.diagnosis_prompt_ids),
                     "diagnosis_prompt_ids must hold (present ids, absent ids) for each disease")

    @property
    def num_diseases(self) -> int:
        return len(self.disease_names)

    @property
    def num_image_tokens(self) -> int:
        """Visual tokens spliced into the LLM input (the perceiver's latents)."""
        return self.vision_config.num_latents

    def disease_index(self, name: str) -> int:
        key = str(name).strip().lower()
        if key not in self.disease_names:
            raise ValueError(f"unknown disease name {name!r}; this model knows {self.disease_names}")
        return self.disease_names.index(key)


__all__ = ["DiaLlamaConfig", "DiaLlamaVisionConfig", "CHEXPERT_14", "CT_RATE_18", "DISEASE_SETS"]
