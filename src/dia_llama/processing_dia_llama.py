"""Dia-LLaMA's processor: a volume processor and a tokenizer; builds the diagnostic prompts and decodes reports.

Hub remote-code file: depends only on numpy, torch and transformers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_dia_llama import (
    DEFAULT_INSTRUCTION,
    DEFAULT_PROMPT_TEMPLATE,
    PROMPT_TYPES,
    resolve_disease_names,
)
from .image_processing_dia_llama import DiaLlamaVolumeProcessor, resize_volume  # noqa: F401  (older import path)

IMAGE_TOKEN = "<image>"
IMAGE_START_TOKEN = "<image_start>"
IMAGE_END_TOKEN = "<image_end>"
DIAGNOSIS_TOKEN = "<dx>"
DISEASE_TOKEN = "<disease>"
SPECIAL_TOKENS = [IMAGE_TOKEN, IMAGE_START_TOKEN, IMAGE_END_TOKEN, DIAGNOSIS_TOKEN, DISEASE_TOKEN]


class DiaLlamaProcessor(ProcessorMixin):
    """Volume processor + tokenizer. Builds the Dia-LLaMA prompt:

    ``BOS <image_start> <image>×N <image_end> [diagnostic prompt] instruction [report EOS]``

    The diagnostic prompt is, per disease, ``prompt_template.format(disease=…, state=present_word|absent_word)``
    (`text`), L `<disease>` soft-prompt slots (`token`/`feature`), or nothing (`none`). Training calls pass `reports`
    and `disease_labels` (ground truth in the prompt, labels −100 except report + EOS, right padding). Inference
    calls pass only `volumes` (one `<dx>` placeholder that the model's `generate` expands into its own diagnoses, left
    padding) or `diagnoses` (a two-step path: the given diagnoses are written into the prompt).
    """


    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        disease_names="chexpert14",
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        present_word: str = "positive",
        absent_word: str = "negative",
        instruction: str = DEFAULT_INSTRUCTION,
        num_image_tokens: int = 32,
        prompt_type: str = "text",
        max_report_tokens: int = 512,
        chat_template=None,
        **kwargs,
    ):
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.disease_names = resolve_disease_names(disease_names)
        self.prompt_template, self.present_word, self.absent_word = prompt_template, present_word, absent_word
        self.instruction = instruction
        self.num_image_tokens = int(num_image_tokens)
        if prompt_type not in PROMPT_TYPES:
            raise ValueError(f"prompt_type must be one of {PROMPT_TYPES}, got {prompt_type!r}")
        self.prompt_type = prompt_type
        self.max_report_tokens = int(max_report_tokens)
        missing = [t for t in SPECIAL_TOKENS if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
        if missing:
            raise ValueError(
                f"the tokenizer lacks the special tokens {missing}; add them with "
                f"tokenizer.add_special_tokens({{'additional_special_tokens': {SPECIAL_TOKENS}}}) and resize the "
                "model's embeddings"
            )
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs an eos_token")
        self._token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        self._sentence_ids, self._instruction_ids, self._pieces_problem = self._prompt_pieces()

    # -- prompt text ---------------------------------------------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        return self._token_ids[IMAGE_TOKEN]

    def disease_sentence(self, disease: str, present: bool) -> str:
        return self.prompt_template.format(disease=disease, state=self.present_word if present else self.absent_word)

    def diagnostic_prompt(self, present: Sequence[bool]) -> str:
        """The diagnostic text prompt for one case."""
        return "".join(self.disease_sentence(n, bool(p)) for n, p in zip(self.disease_names, present))

    def prompt_text(self, states=None) -> str:
        """The text after `<image_end>`: the diagnostic prompt of `states` (text prompts) and the instruction. It is
        tokenized in one call, as the official code tokenizes its whole prompt string."""
        if self.prompt_type == "text" and states is not None:
            return self.diagnostic_prompt(states) + self.instruction
        return self.instruction

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    # -- the diagnostic prompt as pieces (for `generate`) --------------------------------------------------------------
    def _prompt_pieces(self):
        """Per disease, the (present, absent) token ids of its sentence, and the instruction's ids, cut out of one-call
        tokenizations of the whole prompt text, so that joining the pieces of any diagnosis gives exactly
        `encode(prompt_text(states))`. `generate` builds the prompt of the model's own diagnoses from these pieces
        (`config.diagnosis_prompt_ids`), without a tokenizer.

        A sentence's pieces end before its trailing space, which belongs to the next word (SentencePiece's `▁The`,
        byte-level BPE's `ĠThe`). Tokenizers that split words at spaces join exactly; that is checked on every pair of
        neighbouring sentences in all four present/absent combinations. Returns (pieces, instruction ids, problem):
        `problem` says why the pieces do not join (None when they do)."""
        names = self.disease_names
        if self.prompt_type != "text" or not names:
            return [], self._encode(self.instruction), None
        cut = {}
        for state in (True, False):
            states = [state] * len(names)
            text, ends, offset = self.prompt_text(states), [], 0
            for name in names:
                sentence = self.disease_sentence(name, state)
                ends.append(offset + len(sentence.rstrip()))
                offset += len(sentence)
            pieces, before = [], []
            for end in [*ends, len(text)]:
                ids = self._encode(text[:end])
                if ids[: len(before)] != before:
                    where = f"after {names[len(pieces) - 1]!r}" if pieces else "at the start"
                    return [], self._encode(self.instruction), (
                        f"tokenizing the prompt text in one call changes the tokens {where}")
                pieces.append(ids[len(before) :])
                before = ids
            cut[state] = pieces
        if cut[True][-1] != cut[False][-1]:
            return [], self._encode(self.instruction), "the instruction's tokens depend on the last diagnosis"
        table = [(p, a) for p, a in zip(cut[True][:-1], cut[False][:-1])]
        instruction = cut[True][-1]
        for phase in (0, 1):  # alternating states: every neighbouring pair in the two mixed combinations
            states = [(i + phase) % 2 == 0 for i in range(len(names))]
            joined = [t for (p, a), s in zip(table, states) for t in (p if s else a)] + instruction
            if joined != self._encode(self.prompt_text(states)):
                return [], instruction, "sentence pieces joined for a mixed diagnosis differ from one-call tokenization"
        return table, instruction, None

    def prepare_model_config(self, config) -> None:
        """Write the token ids and the diagnostic prompt token table into a DiaLlamaConfig."""
        if list(config.disease_names) != self.disease_names:
            raise ValueError(f"processor diseases {self.disease_names} differ from the model's {config.disease_names}")
        if self._pieces_problem:
            raise ValueError(
                f"{type(self.tokenizer).__name__} cannot give `generate` an exact diagnostic prompt table: "
                f"{self._pieces_problem}. Generate in two steps instead: model.diagnose(...), then "
                "model.generate(**processor(volumes=..., diagnoses=...))."
            )
        config.image_token_id = self._token_ids[IMAGE_TOKEN]
        config.image_start_token_id = self._token_ids[IMAGE_START_TOKEN]
        config.image_end_token_id = self._token_ids[IMAGE_END_TOKEN]
        config.diagnosis_token_id = self._token_ids[DIAGNOSIS_TOKEN]
        config.disease_token_id = self._token_ids[DISEASE_TOKEN]
        # only text prompts have a diagnostic prompt for `generate` to write
        config.diagnosis_prompt_ids = [[list(p), list(a)] for p, a in self._sentence_ids] or None

    def prompt_ids(self, states=None) -> list[int]:
        """Token ids of the prompt. `states` (L,) bools write a text prompt, tokenized with the instruction in one call;
        None leaves a `<dx>` placeholder that `generate` replaces with the pieces of its own diagnoses."""
        tok = self.tokenizer
        ids = [tok.bos_token_id] if tok.bos_token_id is not None else []
        ids += [self._token_ids[IMAGE_START_TOKEN]] + [self._token_ids[IMAGE_TOKEN]] * self.num_image_tokens
        ids += [self._token_ids[IMAGE_END_TOKEN]]
        if self.prompt_type == "text" and states is None:
            return ids + [self._token_ids[DIAGNOSIS_TOKEN]] + self._instruction_ids
        if self.prompt_type in ("token", "feature"):
            ids += [self._token_ids[DISEASE_TOKEN]] * len(self.disease_names)
        return ids + self._encode(self.prompt_text(states))

    # -- labels --------------------------------------------------------------------------------------------------------
    def encode_disease_labels(self, disease_labels, batch_size: int) -> np.ndarray:
        """Accepts (B, L) arrays, lists of {disease: 0|1} dicts, or lists of lists of present disease names."""
        if isinstance(disease_labels, torch.Tensor):
            disease_labels = disease_labels.detach().cpu().numpy()
        rows = []
        for row in disease_labels:
            if isinstance(row, Mapping):
                unknown = [k for k in row if str(k).strip().lower() not in self.disease_names]
                if unknown:
                    raise ValueError(f"unknown disease names {unknown}; this processor knows {self.disease_names}")
                lowered = {str(k).strip().lower(): v for k, v in row.items()}
                rows.append([float(lowered.get(n, 0)) for n in self.disease_names])
            elif len(row) and isinstance(next(iter(row)), str):
                unknown = [k for k in row if k.strip().lower() not in self.disease_names]
                if unknown:
                    raise ValueError(f"unknown disease names {unknown}; this processor knows {self.disease_names}")
                names = {k.strip().lower() for k in row}
                rows.append([float(n in names) for n in self.disease_names])
            else:
                values = np.asarray(row, dtype=np.float32).reshape(-1)
                if values.shape[0] != len(self.disease_names):
                    raise ValueError(f"disease label rows need {len(self.disease_names)} values, got {values.shape[0]}")
                rows.append(values.tolist())
        labels = np.asarray(rows, dtype=np.float32).reshape(-1, len(self.disease_names))
        if labels.shape[0] != batch_size:
            raise ValueError(f"got {labels.shape[0]} disease label rows for a batch of {batch_size}")
        if not np.isfinite(labels).all() or ((labels != 0) & (labels != 1)).any():
            raise ValueError("disease labels must be 0 or 1")
        return labels

    # -- main call -----------------------------------------------------------------------------------------------------
    def __call__(
        self,
        volumes=None,
        reports=None,
        disease_labels=None,
        diagnoses=None,
        return_tensors: str | None = "pt",
        padding_side: str | None = None,
        max_report_tokens: int | None = None,
        axis_order: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Build model inputs; see the class docstring for training vs. inference mode."""
        if isinstance(reports, str):
            reports = [reports]
        data = {}
        batch = None
        if volumes is not None:
            data.update(self.image_processor(volumes, return_tensors="pt", axis_order=axis_order))
            batch = data["pixel_values"].shape[0]
        if reports is not None:
            if batch is not None and len(reports) != batch:
                raise ValueError(f"got {len(reports)} reports for {batch} volumes")
            batch = len(reports)
            for i, report in enumerate(reports):
                if not isinstance(report, str) or not report.strip():
                    raise ValueError(f"report {i} is empty or not a string")
        labels_array = None
        if disease_labels is not None:
            labels_array = self.encode_disease_labels(disease_labels,
                                                      batch if batch is not None else len(disease_labels))
            batch = labels_array.shape[0]
            data["disease_labels"] = torch.from_numpy(labels_array)
        states_array = None
        if diagnoses is not None:
            states_array = self.encode_disease_labels(diagnoses, batch if batch is not None else len(diagnoses)) > 0.5
            batch = states_array.shape[0]
        if batch is None:
            raise ValueError("give volumes, reports, disease_labels or diagnoses")
        if reports is not None and self.prompt_type == "text" and labels_array is None and states_array is None:
            raise ValueError("training inputs (reports) with text prompts need disease_labels (ground truth)")

        limit = self.max_report_tokens if max_report_tokens is None else max_report_tokens
        rows, label_rows = [], []
        for i in range(batch):
            states = None
            if states_array is not None:
                states = states_array[i]
            elif labels_array is not None and reports is not None:
                states = labels_array[i] > 0.5
            prompt = self.prompt_ids(states)
            if reports is None:
                rows.append(prompt)
                continue
            # The official text is `prompt + " " + report` in one call; SentencePiece tokenizes each space-led word on
            # its own, so the report's own call (its leading "▁" is that space) gives the same ids.
            report_ids = self._encode(reports[i].strip())[: max(limit - 1, 0)]
            report_ids = report_ids + [self.tokenizer.eos_token_id]
            rows.append(prompt + report_ids)
            label_rows.append([-100] * len(prompt) + report_ids)

        side = padding_side or ("right" if reports is not None else "left")
        data.update(self.pad(rows, label_rows if reports is not None else None, side))
        if return_tensors not in ("pt", None):
            raise ValueError("only return_tensors='pt' is supported")
        return BatchFeature(data=data)

    def pad(self, rows, label_rows=None, side: str = "right") -> dict:
        """Dynamic padding to the longest row. Returns input_ids, attention_mask and (if given) labels tensors."""
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long) if label_rows is not None else None
        for i, row in enumerate(rows):
            span = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
            ids[i, span] = torch.tensor(row, dtype=torch.long)
            mask[i, span] = 1
            if labels is not None:
                labels[i, span] = torch.tensor(label_rows[i], dtype=torch.long)
        out = {"input_ids": ids, "attention_mask": mask}
        if labels is not None:
            out["labels"] = labels
        return out

    # -- decoding ------------------------------------------------------------------------------------------------------
    def _report_start(self, ids: list[int]) -> int:
        """Index just after the instruction (where the report begins), or 0 if the prompt is not in `ids`."""
        n = len(self._instruction_ids)
        for start in range(len(ids) - n, -1, -1):
            if ids[start : start + n] == self._instruction_ids:
                return start + n
        return 0

    def batch_decode(self, sequences, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        """Decode generated sequences to report text (the prompt, if present, is cut off)."""
        texts = []
        for ids in _id_lists(sequences):
            text = self.tokenizer.decode(ids[self._report_start(ids) :], skip_special_tokens=skip_special_tokens,
                                         **kwargs)
            texts.append(text.strip())
        return texts

    def decode(self, ids, **kwargs) -> str:
        return self.batch_decode([ids], **kwargs)[0]

    def decode_diagnoses(self, sequences) -> list[dict[str, bool]]:
        """Read the diagnoses written into expanded text prompts: one {disease: present} dict per sequence."""
        out = []
        for ids in _id_lists(sequences):
            found = {}
            for name, (present_ids, absent_ids) in zip(self.disease_names, self._sentence_ids):
                if _contains(ids, present_ids):
                    found[name] = True
                elif _contains(ids, absent_ids):
                    found[name] = False
            out.append(found)
        return out

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "pixel_values"]


def _id_lists(sequences) -> list[list[int]]:
    """Generated sequences (a generate output, a (B, T) tensor or lists) as lists of token ids."""
    if hasattr(sequences, "sequences"):
        sequences = sequences.sequences
    if isinstance(sequences, torch.Tensor):
        sequences = sequences.tolist()
    return [list(ids) for ids in sequences]


def _contains(ids: list[int], sub: list[int]) -> bool:
    n = len(sub)
    return any(ids[i : i + n] == sub for i in range(len(ids) - n + 1))


__all__ = ["DiaLlamaProcessor", "DiaLlamaVolumeProcessor", "SPECIAL_TOKENS"]
