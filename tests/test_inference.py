"""Single-scan inference: `dia-llama generate` on NIfTI and DICOM, the JSON schema, the pipeline, memory options."""

import json

import jsonschema
import numpy as np
import pytest
import torch

from dia_llama.cli import main
from dia_llama.inference import RECORD_SCHEMA, load_for_inference
from dia_llama.volume_io import write_nifti


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    from helpers.dicom_fixtures import write_ct_series

    root = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 1000, size=(48, 40, 20)).astype(np.int16)
    write_nifti(root / "chest.nii.gz", vol, spacing=(0.8, 0.8, 2.0))
    write_ct_series(root / "dicom_series", vol, spacing=(0.8, 0.8, 2.0))
    return root / "chest.nii.gz", root / "dicom_series"


def test_generate_cli_prints_table_and_report(tiny_model_dir, scans, capsys):
    assert main(["generate", str(tiny_model_dir), str(scans[0]), str(scans[1]), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("Report:") == 2 and "pleural effusion" in out and ("present" in out or "absent" in out)
    assert str(scans[1]) in out


def test_generate_json_validates_against_schema(tiny_model_dir, scans, capsys):
    assert main(["generate", str(tiny_model_dir), str(scans[0]), str(scans[1]), "--json", "--max-new-tokens", "3"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    for record in records:
        jsonschema.validate(record, RECORD_SCHEMA)
        assert len(record["diagnoses"]) == 14
    # same volume in two formats → same diagnoses
    assert [d["probability"] for d in records[0]["diagnoses"]] == pytest.approx(
        [d["probability"] for d in records[1]["diagnoses"]], abs=1e-5)


def test_pipeline_task(tiny_model_dir, scans):
    from transformers import pipeline

    # config.json declares the pipeline (custom_pipelines), so transformers infers the task and asks for consent
    pipe = pipeline(model=str(tiny_model_dir), trust_remote_code=True)
    assert pipe.task == "ct-report-generation" and type(pipe).__name__ == "CTReportGenerationPipeline"
    result = pipe(str(scans[0]), max_new_tokens=3)
    assert isinstance(result["report"], str) and set(result["diagnoses"]) == set(pipe.model.config.disease_names)
    forced = pipe(str(scans[0]), diagnoses=["cardiomegaly"], max_new_tokens=3)
    assert isinstance(forced["report"], str)
    # batching: 3 scans (NIfTI, DICOM, NIfTI) 2 at a time give the results of one at a time
    inputs = [str(scans[0]), str(scans[1]), str(scans[0])]
    batched = pipe(inputs, batch_size=2, max_new_tokens=3)
    single = [pipe(scan, max_new_tokens=3) for scan in inputs]
    assert [r["report"] for r in batched] == [r["report"] for r in single]
    for b, s in zip(batched, single):
        present = lambda result: {n: d["present"] for n, d in result["diagnoses"].items()}  # noqa: E731
        assert present(b) == present(s)
        assert [d["probability"] for d in b["diagnoses"].values()] == pytest.approx(
            [d["probability"] for d in s["diagnoses"].values()], abs=1e-5)
    # prompts of different lengths (given diagnoses) are left-padded into one batch
    mixed = pipe(inputs[:2], batch_size=2, diagnoses=["cardiomegaly", "edema"], max_new_tokens=3)
    assert [r["report"] for r in mixed] == [pipe(x, diagnoses=["cardiomegaly", "edema"], max_new_tokens=3)["report"]
                                            for x in inputs[:2]]


def test_load_pipeline_with_device_map(tiny_model_dir, scans):
    from dia_llama.inference import load_pipeline

    pipe = load_pipeline(str(tiny_model_dir), device_map="auto", dtype="bfloat16")
    assert pipe.task == "ct-report-generation" and pipe.model.dtype == torch.bfloat16
    results = pipe([str(scans[0]), str(scans[1])], batch_size=2, max_new_tokens=2)
    assert len(results) == 2 and all(len(r["diagnoses"]) == 14 for r in results)
    # `import dia_llama` registers the task: a loaded model and processor make the pipeline by its name
    from transformers import pipeline

    by_name = pipeline("ct-report-generation", model=pipe.model, processor=pipe.processor)
    assert by_name(str(scans[0]), max_new_tokens=2)["report"] == results[0]["report"]


def test_quantized_loading_says_why_it_cannot_run_here(tiny_model_dir, scans, capsys):
    """No CUDA here (CI, these machines): a clear message from the Python API, the pipeline and the CLI."""
    from dia_llama.inference import load_pipeline, quantization_config

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the message is for machines without one")
    for call in (lambda: quantization_config(load_in_4bit=True), lambda: load_for_inference(str(tiny_model_dir),
                                                                                            load_in_8bit=True),
                 lambda: load_pipeline(str(tiny_model_dir), load_in_4bit=True)):
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            call()
    for flag in ("--load-in-4bit", "--load-in-8bit"):
        assert main(["generate", str(tiny_model_dir), str(scans[0]), flag]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err
    with pytest.raises(ValueError, match="choose one"):
        quantization_config(load_in_4bit=True, load_in_8bit=True)


@pytest.mark.parametrize("bits", [4, 8])
def test_quantization_config_quantizes_the_language_model_only(bits):
    """The config we build, judged by transformers' own rule for which linear layers bitsandbytes replaces (the
    quantization itself needs CUDA and is not run here)."""
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    from dia_llama import DiaLlamaForConditionalGeneration
    from dia_llama.inference import quantization_config
    from dia_llama.presets import build_config

    config = quantization_config(load_in_4bit=bits == 4, load_in_8bit=bits == 8, check=False)
    assert getattr(config, f"load_in_{bits}bit")
    if bits == 4:
        assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_compute_dtype == torch.bfloat16
    with torch.device("meta"):
        model = DiaLlamaForConditionalGeneration(build_config("tiny", 500))
    skip = HfQuantizer.get_modules_to_not_convert(model, config.llm_int8_skip_modules, model._keep_in_fp32_modules)
    linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    quantized = {name for name in linear if should_convert_module(name, skip)}
    assert quantized and quantized == {name for name in linear if name.startswith("model.language_model.")}
    assert {name for name in linear if not name.startswith("model.language_model.")} >= {
        "lm_head", "model.multi_modal_projector", "model.vision_tower.layers.0.attn.qkv"}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_inference(tiny_model_dir, scans, dtype):
    model, processor = load_for_inference(str(tiny_model_dir), dtype=dtype)
    assert model.dtype == getattr(torch, dtype)
    out = model.generate(**processor(volumes=[str(scans[0])]), max_new_tokens=2, return_dict_in_generate=True)
    assert torch.isfinite(out["diagnoses"].probabilities).all()


def test_device_map_auto(tiny_model_dir, scans):
    model, processor = load_for_inference(str(tiny_model_dir), device_map="auto")
    assert model.device.type == "cpu"  # the only device here; accelerate places every module on it
    out = model.generate(**processor(volumes=[str(scans[0])]), max_new_tokens=2)
    assert out.shape[0] == 1
