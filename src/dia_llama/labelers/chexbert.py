"""CheXbert (Smit et al., 2020) as a report labeler, from a user's local ``chexbert.pth``.

Architecture (matching the released checkpoint's keys): ``bert`` = :class:`transformers.BertModel`
(bert-base-uncased config, with pooler) -> dropout 0.1 on the [CLS] vector -> ``linear_heads``: 13 heads of 4
classes (0 blank, 1 positive, 2 negative, 3 uncertain) and 1 head of 2 classes ("no finding": 0 blank,
1 positive). Checkpoint: ``{"epoch", "model_state_dict", "optimizer_state_dict"}`` with ``module.``-prefixed
keys (``module.bert.*``, ``module.linear_heads.{0..13}.weight/bias``); loaded with
``torch.load(weights_only=True)``, ``module.`` stripped, stale ``position_ids`` buffers dropped, then loaded
strictly. Needs the bert-base-uncased ``vocab.txt`` too. Nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..configuration_dia_llama import CHEXPERT_14
from . import LabelerOutput

CHEXBERT_HELP = (
    "CheXbert needs its released checkpoint `chexbert.pth` (from the CheXbert authors, "
    "https://github.com/stanfordmlgroup/CheXbert) and the bert-base-uncased `vocab.txt`, both as local files: "
    "get_labeler('chexbert', checkpoint='path/to/chexbert.pth', vocab='path/to/vocab.txt') (or put vocab.txt "
    "next to the checkpoint, or set DIA_LLAMA_CHEXBERT to the checkpoint path). Nothing is downloaded."
)


class CheXbertModel(nn.Module):
    """BERT encoder + dropout on [CLS] + 13 four-way heads + 1 two-way head (key names as in CheXbert)."""

    def __init__(self, config=None, p: float = 0.1, n_conditions: int = 13):
        super().__init__()
        from transformers import BertConfig, BertModel

        if config is None:
            config = BertConfig()  # the defaults are bert-base-uncased's
        elif isinstance(config, dict):
            config = BertConfig(**config)
        elif isinstance(config, (str, os.PathLike)):
            path = Path(config)
            config = BertConfig.from_json_file(str(path / "config.json" if path.is_dir() else path))
        self.bert = BertModel(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(p)
        hidden = config.hidden_size
        self.linear_heads = nn.ModuleList([nn.Linear(hidden, 4) for _ in range(n_conditions)] + [nn.Linear(hidden, 2)])

    def forward(self, input_ids, attention_mask=None) -> list[torch.Tensor]:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        cls = self.dropout(hidden[:, 0, :])
        return [head(cls) for head in self.linear_heads]


def load_chexbert_state_dict(path) -> dict:
    """The ``model_state_dict`` of a CheXbert checkpoint, ``module.`` prefixes stripped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CheXbert checkpoint not found: {path}. {CHEXBERT_HELP}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model_state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a CheXbert checkpoint (expected a dict with 'model_state_dict'). "
                         f"{CHEXBERT_HELP}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_into(model: nn.Module, state: dict, source: str, help_text: str) -> None:
    """Strict load; old ``*.position_ids``/``token_type_ids`` buffers the model no longer keeps are dropped."""
    expected = set(model.state_dict())
    state = {k: v for k, v in state.items()
             if k in expected or not k.endswith(("embeddings.position_ids", "embeddings.token_type_ids"))}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match the model: missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}. {help_text}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # shape mismatch (e.g. another BERT config)
        raise ValueError(f"{source}: {err}. {help_text}") from err


class CheXbertLabeler:
    """CheXpert-14 labels from a local CheXbert checkpoint (see the module doc).

    Args: ``checkpoint`` (path to ``chexbert.pth``; default ``$DIA_LLAMA_CHEXBERT``), ``vocab`` (BERT
    ``vocab.txt``; default: next to the checkpoint) or ``tokenizer`` (a ready tokenizer), ``config``
    (BertConfig / dict / config.json; default bert-base-uncased), ``device``, ``batch_size``, ``max_length``.
    """

    name = "chexbert"

    def __init__(self, checkpoint=None, vocab=None, tokenizer=None, config=None, device: str = "cpu",
                 batch_size: int = 16, max_length: int = 512):
        checkpoint = checkpoint or os.environ.get("DIA_LLAMA_CHEXBERT")
        if not checkpoint:
            raise FileNotFoundError(f"No CheXbert checkpoint given. {CHEXBERT_HELP}")
        checkpoint = Path(checkpoint)
        self.disease_names = list(CHEXPERT_14)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        if tokenizer is None:
            vocab = Path(vocab) if vocab else checkpoint.parent / "vocab.txt"
            if vocab.is_dir():
                vocab = vocab / "vocab.txt"
            if not vocab.is_file():
                raise FileNotFoundError(f"BERT vocabulary not found: {vocab}. {CHEXBERT_HELP}")
            from transformers import BertTokenizerFast

            tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
        self.tokenizer = tokenizer
        state = load_chexbert_state_dict(checkpoint)
        self.model = CheXbertModel(config)
        load_into(self.model, state, str(checkpoint), CHEXBERT_HELP)
        self.model.to(self.device).eval()

    @staticmethod
    def _clean(text) -> str:
        return " ".join(str(text or "").split())

    @torch.no_grad()
    def predict_codes(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 14) codes: 13 x {0 blank, 1 positive, 2 negative, 3 uncertain}, "no finding" in {0, 1}."""
        out = np.zeros((len(texts), len(self.disease_names)), dtype=np.int64)
        for start in range(0, len(texts), self.batch_size):
            batch = [self._clean(t) for t in texts[start:start + self.batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
            logits = self.model(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))
            out[start:start + len(batch)] = torch.stack([h.argmax(-1) for h in logits], dim=1).cpu().numpy()
        return out

    def label(self, texts: Sequence[str]) -> LabelerOutput:
        """Label reports -> ``present`` (code 1) and the 4-state ``codes``."""
        if isinstance(texts, str):
            texts = [texts]
        codes = self.predict_codes(list(texts))
        return LabelerOutput(present=(codes == 1).astype(np.int64), codes=codes,
                             disease_names=list(self.disease_names), labeler=self.name)

    __call__ = label
