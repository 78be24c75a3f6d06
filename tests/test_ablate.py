"""A one-step smoke of `dia-llama ablate` (the full study lives in docs/ablations.md)."""

import json

import pytest

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


def _fake_metrics(seed, ce_f1, bleu4, dx_f1):
    return {"seed": seed, "clinical_efficacy": {"micro": {"precision": 0.5, "recall": 0.5, "f1": ce_f1}},
            "nlg": {"coco_raw": {"BLEU-1": 60.0, "BLEU-4": bleu4, "METEOR": 30.0, "ROUGE-L": 50.0}},
            "diagnosis": {"micro": {"f1": dx_f1}}}


def test_aggregate_and_paired_differences_keep_units():
    from dia_llama.ablate import aggregate, markdown_tables, paired_differences

    results = {"full": [_fake_metrics(0, 0.50, 37.0, 0.60), _fake_metrics(1, 0.54, 39.0, 0.62)],
               "baseline": [_fake_metrics(1, 0.44, 36.0, 0.62), _fake_metrics(0, 0.40, 35.0, 0.60)]}
    table = aggregate(results)
    assert table["full"]["BLEU-4"][0] == 38.0 and table["full"]["CE F1"][0] == 0.52  # percentage points / fractions
    diffs = paired_differences(results)
    mean, std, n = diffs["baseline"]["CE F1"]
    assert (round(mean, 6), round(std, 6), n) == (-0.1, 0.0, 2)  # paired by seed, not by position
    assert diffs["baseline"]["BLEU-4"][0] == -2.5
    assert ("| Full model (DTP + DAA + DPM) | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.520 ± 0.028 | 60.00 ± 0.00 "
            "| 38.00 ± 1.41" in markdown_tables(table, "t"))


def test_localization_table_over_seeds_and_the_paper_setting():
    from dia_llama.ablate import SETTINGS, localization_markdown, localization_table

    def loc(pg, mass):
        row = {"pointing_game": pg, "pointing_game_uniform": 0.2, "mass_in_region": mass, "mass_uniform": 0.05}
        return {"overall": {**row, "cases": 10}, "per_class": {"cardiomegaly": {**row, "cases": 4}}}

    results = {"paper": [{"seed": 0, "attention_localization": loc(0.2, 0.05)},
                         {"seed": 1, "attention_localization": loc(0.4, 0.07)}],
               "dtp_mean_linear": [{"seed": 0}]}  # mean pooling: no attention, no row
    table = localization_table(results)
    assert list(table) == ["paper"]
    assert table["paper"]["pointing_game"][0] == pytest.approx(0.3) and table["paper"]["seeds"] == 2
    assert table["paper"]["per_class"]["cardiomegaly"]["mass_in_region"] == pytest.approx(0.06)
    assert "| The paper's model" in localization_markdown(table) and "(0.200)" in localization_markdown(table)
    # the paper's row is the paper's branch: static attention at scale 1, no extensions
    overrides = SETTINGS["paper"][1]
    assert overrides["disease_attention"] == "static" and overrides["disease_attention_scale"] == 1.0
    assert not overrides["disease_max_pooling"] and not overrides["derive_no_finding"]
    assert overrides["disease_attention_min_intensity"] == "none"  # attention over all patches, as the paper's
