"""A one-step smoke of `dia-llama ablate` (the full study lives in docs/ablations.md)."""

import json

from dia_llama.cli import main


def test_ablate_one_step_smoke(tmp_path):
    from dia_llama.data.synthetic import synthesize_benchmark

    data = tmp_path / "synth"
    synthesize_benchmark(data, num_cases=20, seed=0, volume_size=(64, 64, 32), num_workers=1, progress=False)
    out = tmp_path / "ablate"
    args = ["ablate", "--data", str(data), "--preset", "tiny", "--seeds", "0", "--settings", "full", "baseline",
            "--max-steps", "1", "--batch-size", "2", "--eval-limit", "2", "--output-dir", str(out)]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["table"]) == {"full", "baseline"}
    assert (out / "figure2_per_disease_f1.png").stat().st_size > 0
    assert "Table 2 analogue" in (out / "tables.md").read_text()
    # resumable: a second call reuses the finished runs
    mtime = (out / "full" / "seed0" / "metrics.json").stat().st_mtime
    assert main(args) == 0
    assert (out / "full" / "seed0" / "metrics.json").stat().st_mtime == mtime
