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
