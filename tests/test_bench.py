"""The benchmark suite's own checks (fast, CPU): the GPU recipe's smoke mode, result/summary writing, and the
preprocessing prototype's equality with DiaLlamaVolumeProcessor on oriented NIfTI files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `bench` is a folder of the repository, not an installed package


def test_gpu_paper_recipe_smoke_writes_all_fields(tmp_path):
    pytest.importorskip("peft")
    out = tmp_path / "gpu.json"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OUT=str(tmp_path / "unused"))
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_paper_recipe.py"), "--smoke",
                           "--output", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["errors"] == {}, data["errors"]
    assert data["settings"]["smoke"] is True and data["settings"]["preset"] == "tiny"
    assert all(p["ok"] for p in data["phases"].values()) and set(data["phases"]) == {
        "environment", "build", "train", "generate", "summary"}
    assert data["environment"]["peak_flops_used"] > 0
    build = data["build"]
    assert build["trainable_params"] > build["lora_params"] > 0 and build["params_total"] > build["trainable_params"]
    assert "checkpointing" in build and build["attn_implementation"] in ("sdpa", "flash_attention_2")
    train = data["train"]
    for key in ("samples_per_s", "tokens_per_s", "step_s", "flops", "mfu", "projected_minutes_2000x16",
                "micro_batch", "grad_accum", "tokens_per_sample"):
        assert key in train, key
    assert train["timed_steps"] == 2 and train["samples_per_s"] > 0 and train["flops"]["per_sample"] > 0
    gen = data["generate"]
    assert gen["tokens_per_s"] > 0 and gen["output_shape"][0] == gen["batch"]
    assert any("projected" in r["quantity"] for r in data["rows"])
    assert not (tmp_path / "unused").exists()  # --output wins over $OUT


def test_generation_benchmark_writes_json_and_summary(tmp_path):
    from bench import bench_generation

    payload = bench_generation.run(quick=True, results_dir=tmp_path, new_tokens=2, repeats=1, profile=False)
    data = json.loads((tmp_path / "generation.json").read_text())
    assert data["benchmark"] == "generation" and data["machine"]["cpu_model"]
    assert data["machine"]["torch_version"] == torch.__version__
    assert set(data["timings"]) >= {"batch1_cache", "batch8_cache", "batch1_nocache", "batch8_nocache",
                                   "batch1_cache_2threads"}
    assert data["timings"]["batch8_cache"]["repeats"] == 1 and "median_s" in data["timings"]["batch8_cache"]
    assert data["output_shapes"]["batch8_cache"][0] == 8
    assert payload["rows"][0]["target"] == "≥ 4×" and payload["rows"][0]["passed"] in (True, False)
    summary = (tmp_path / "summary.md").read_text()
    assert "| generation | batch-8 tokens/s / batch-1 (KV cache, 1 thread) | ≥ 4× |" in summary


def test_summary_reports_misses_and_skips(tmp_path):
    from bench.common import ratio_row, row, write_result

    rows = [ratio_row("speed-up", 1.5, 2.0, higher_is_better=True, limit="profile says X"),
            ratio_row("overhead", 1.2, 1.5, higher_is_better=False),
            {**row("cache throughput", None, note="module missing"), "skipped": True}]
    write_result("preprocess", {"settings": {"quick": True}, "rows": rows}, tmp_path)
    write_result("vision", {"settings": {}, "error": "RuntimeError: boom", "rows": []}, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert ("| preprocess | speed-up | ≥ 2× | 1.50 × | MISS | missed by 1.33× (needs 2, has 1.50); profile says X |"
            in summary)
    assert "| preprocess | overhead | ≤ 1.5× | 1.20 × | pass |" in summary
    assert "| preprocess | cache throughput | — | — | skipped | module missing |" in summary
    assert "| vision | (benchmark failed) |" in summary and "boom" in summary
