"""Shared fixtures. Everything is offline and built here: tiny models, a tokenizer trained on the spot, fake data."""

import os
import pathlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from helpers.hub_server import hub_server_fixture  # noqa: E402, F401  (a fixture for every test module)

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """An untrained `tiny` Dia-LLaMA folder written by `dia-llama init` (once per session)."""
    from dia_llama.cli import main

    out = tmp_path_factory.mktemp("tiny_model")
    assert main(["init", str(out), "--preset", "tiny"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_model_and_processor(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import dia_llama  # noqa: F401  (registers the Auto classes)

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    return model, processor
