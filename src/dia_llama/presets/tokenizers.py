"""Tokenizers: the `tiny` preset's byte-level BPE trained offline on report text, and an LLM folder's own (`--llm`)
with Dia-LLaMA's placeholder tokens added."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ..configuration_dia_llama import DiaLlamaConfig, resolve_disease_names
from ..processing_dia_llama import SPECIAL_TOKENS


def report_corpus() -> list[str]:
    """The bundled report-style corpus used to train the tiny tokenizer."""
    text = resources.files("dia_llama").joinpath("resources/report_corpus.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def train_tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained offline on report text and the prompt sentences (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    sentences = list(corpus if corpus is not None else report_corpus())
    config = DiaLlamaConfig()
    for names in (resolve_disease_names("chexpert14"), resolve_disease_names("ctrate18")):
        for name in names:
            for word in (config.present_word, config.absent_word):
                sentences.append(config.prompt_template.format(disease=name, state=word))
    sentences.append(config.instruction)

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>"] + SPECIAL_TOKENS
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sentences, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"}, additional_special_tokens=SPECIAL_TOKENS,
        model_max_length=2048,
    )


def load_llm_tokenizer(llm):
    """The tokenizer of a local LLM folder (`--llm`): its `tokenizer.json` / `tokenizer_config.json`, or a bare
    LLaMA-style SentencePiece `tokenizer.model`, which needs the sentencepiece package
    (`pip install "dia-llama[llama]"`). Raises ValueError naming the folder and the problem."""
    import importlib.util

    from transformers import LlamaTokenizer

    path = Path(llm)
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder; --llm takes a local folder with the language model's tokenizer")
    has_json, has_config = (path / "tokenizer.json").is_file(), (path / "tokenizer_config.json").is_file()
    has_sentencepiece = (path / "tokenizer.model").is_file()
    if not (has_json or has_config or has_sentencepiece):
        raise ValueError(f"{path}: no tokenizer (tokenizer.json, tokenizer_config.json or tokenizer.model) "
                         "in the folder")
    if has_sentencepiece and not has_json and importlib.util.find_spec("sentencepiece") is None:
        raise ValueError(
            f"{path}: holds a SentencePiece tokenizer.model and no tokenizer.json; reading it needs the sentencepiece "
            "package: pip install 'dia-llama[llama]'"
        )
    try:
        if has_sentencepiece and not (has_json or has_config):
            tokenizer = LlamaTokenizer.from_pretrained(path)  # a bare LLaMA-style SentencePiece model
        else:
            tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError, ImportError) as err:
        raise ValueError(f"{path}: could not load its tokenizer ({type(err).__name__}: {err})") from err
    if not tokenizer("The lungs are clear.", add_special_tokens=False)["input_ids"]:
        raise ValueError(f"{path}: its tokenizer turns text into no tokens; the tokenizer files are incomplete")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{path}: its tokenizer has no end-of-sequence token (eos_token)")
    return tokenizer


def add_special_tokens(tokenizer) -> int:
    """Add Dia-LLaMA's placeholder tokens (and a pad token) to an existing tokenizer; returns how many were added."""
    added = tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS},
                                         replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        added += tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return added


__all__ = ["add_special_tokens", "load_llm_tokenizer", "report_corpus", "train_tiny_tokenizer"]
