"""CT-RATE's report classifier (Hamamci et al.) as a labeler, from local weights.

Architecture (key names as in CT-RATE's ``RadBertClassifier``): ``model`` = :class:`transformers.RobertaModel`
(RadBERT-RoBERTa-4m, with pooler) and ``classifier`` = ``Linear(hidden, 18)`` on the pooled output; a label is
present at sigmoid >= 0.5. Weights come from a local folder holding ``config.json``, the tokenizer files and a
state dict (``*.safetensors`` or a ``torch.load(weights_only=True)`` file: ``.pt``/``.pth``/``.bin``).
Nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..configuration_dia_llama import CT_RATE_18
from . import LabelerOutput
from .chexbert import load_into

RADBERT_HELP = (
    "The ctrate-radbert labeler needs a local folder with the RadBERT-RoBERTa-4m `config.json` and tokenizer files "
    "(vocab.json + merges.txt or tokenizer.json) plus the trained CT-RATE classifier state dict "
    "(keys `model.*` and `classifier.weight/bias`; a .safetensors, .pt, .pth or .bin file): "
    "get_labeler('ctrate-radbert', model_dir='path/to/folder', weights='path/to/state_dict') "
    "(or set DIA_LLAMA_CTRATE_RADBERT to the folder). Nothing is downloaded."
)
_WEIGHT_NAMES = ("classifier.safetensors", "model.safetensors", "pytorch_model.bin")
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


class RadBertClassifier(nn.Module):
    """RoBERTa encoder + ``Linear(hidden, n_classes)`` on the pooled output (CT-RATE's key names)."""

    def __init__(self, config, n_classes: int = 18):
        super().__init__()
        from transformers import RobertaModel

        self.model = RobertaModel(config, add_pooling_layer=True)
        self.classifier = nn.Linear(config.hidden_size, n_classes)

    def forward(self, input_ids, attention_mask=None) -> torch.Tensor:
        pooled = self.model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.classifier(pooled)


def _find_weights(model_dir: Path) -> Path:
    for name in _WEIGHT_NAMES:
        if (model_dir / name).is_file():
            return model_dir / name
    found = sorted(p for p in model_dir.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"no classifier state dict in {model_dir}. {RADBERT_HELP}")
    raise ValueError(f"several candidate state dicts in {model_dir} ({[p.name for p in found]}): pass weights=. "
                     f"{RADBERT_HELP}")


def load_radbert_state_dict(path) -> dict:
    """State dict from safetensors or ``torch.load(weights_only=True)``.

    ``module.`` is stripped and ``roberta.`` renamed ``model.``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CT-RATE classifier weights not found: {path}. {RADBERT_HELP}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("model_state_dict", "state_dict"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors. {RADBERT_HELP}")
    out = {}
    for k, v in state.items():
        k = k[len("module."):] if k.startswith("module.") else k
        k = "model." + k[len("roberta."):] if k.startswith("roberta.") else k
        out[k] = v
    return out


class RadBertLabeler:
    """CT-RATE-18 labels from the local RadBERT classifier (see the module doc).

    Args: ``model_dir`` (config + tokenizer [+ weights]; default ``$DIA_LLAMA_CTRATE_RADBERT``), ``weights``
    (state dict file; default: found in ``model_dir``), ``device``, ``batch_size``, ``threshold`` (0.5),
    ``max_length`` (512).
    """

    name = "ctrate-radbert"

    def __init__(self, model_dir=None, weights=None, device: str = "cpu", batch_size: int = 16,
                 threshold: float = 0.5, max_length: int = 512):
        model_dir = model_dir or os.environ.get("DIA_LLAMA_CTRATE_RADBERT")
        if not model_dir:
            raise FileNotFoundError(f"No model_dir given. {RADBERT_HELP}")
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir / 'config.json'} not found. {RADBERT_HELP}")
        from transformers import AutoTokenizer, RobertaConfig

        self.disease_names = list(CT_RATE_18)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.threshold = float(threshold)
        self.max_length = int(max_length)
        config = RobertaConfig.from_pretrained(str(model_dir), local_files_only=True)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        except Exception as err:  # noqa: BLE001 - report what is missing
            raise FileNotFoundError(f"could not load the tokenizer from {model_dir} ({err}). {RADBERT_HELP}") from err
        weights = Path(weights) if weights else _find_weights(model_dir)
        self.model = RadBertClassifier(config, n_classes=len(self.disease_names))
        load_into(self.model, load_radbert_state_dict(weights), str(weights), RADBERT_HELP)
        self.model.to(self.device).eval()

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 18) sigmoid probabilities."""
        out = np.zeros((len(texts), len(self.disease_names)), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = [" ".join(str(t or "").split()) for t in texts[start:start + self.batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
            logits = self.model(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))
            out[start:start + len(batch)] = torch.sigmoid(logits.float()).cpu().numpy()
        return out

    def label(self, texts: Sequence[str]) -> LabelerOutput:
        """Label reports -> ``present`` (sigmoid >= threshold); ``codes`` is None (binary classifier)."""
        if isinstance(texts, str):
            texts = [texts]
        present = (self.predict_proba(list(texts)) >= self.threshold).astype(np.int64)
        return LabelerOutput(present=present, codes=None, disease_names=list(self.disease_names), labeler=self.name)

    __call__ = label
