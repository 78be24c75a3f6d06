"""The demo's attention figure: the case rule, one panel per present finding, the true outline beside the attention."""

import json

import pytest


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from dia_llama.data.synthetic import synthesize_benchmark

    out = tmp_path_factory.mktemp("demo_bench")
    synthesize_benchmark(out, num_cases=16, seed=4, volume_size=(64, 64, 32), split_fractions=(0.5, 0.0, 0.5),
                         progress=False)
    return out


def test_overlay_case_follows_the_stated_rule():
    from dia_llama.demo import overlay_case

    rows = {"a": {"finding_boxes": {"x": 1}}, "b": {"finding_boxes": {"x": 1, "y": 2}},
            "c": {"finding_boxes": {"x": 1, "y": 2}}, "d": {"finding_boxes": {}}}
    assert overlay_case(rows, ["a", "b", "c", "d"]) == "b"  # most findings with a region; ties: the first
    assert overlay_case(rows, ["d", "a"]) == "a"
    assert overlay_case(rows, ["d", "e"]) is None  # nothing to draw


def test_panel_slice_shows_the_attention_and_the_finding():
    import numpy as np

    from dia_llama.demo import _panel_slice

    mask = np.zeros((4, 4, 12), bool)
    mask[1, 1, 2:6] = True  # the finding on slices 2..5, largest on 5
    mask[:, :, 5] = True
    assert _panel_slice(mask, top_patch_slice=0, patch_depth=4) == 2  # in the arg-max patch (slices 0..3)
    assert _panel_slice(mask, top_patch_slice=1, patch_depth=4) == 5  # slices 4..7: the largest there
    assert _panel_slice(mask, top_patch_slice=2, patch_depth=4) == 5  # not in the patch: the largest overall


def test_attention_overlay_has_one_panel_per_present_finding(bench, tiny_model_and_processor, tmp_path):
    import matplotlib.image

    from dia_llama.demo import OVERLAY_RULE, overlay_case, plot_attention_overlay

    model, processor = tiny_model_and_processor
    rows = [json.loads(line) for line in (bench / "manifest.jsonl").read_text().splitlines()]
    test = {r["id"]: r for r in rows if r["split"] == "test"}
    expected = overlay_case(test, [r["id"] for r in rows if r["split"] == "test"])
    path = tmp_path / "overlay.png"
    drawn = plot_attention_overlay(model, processor, bench, None, path)
    assert drawn["case"] == expected
    names = list(model.config.disease_names)
    assert drawn["panels"] == [d for d in names if d in test[expected]["finding_boxes"]]
    assert len(drawn["panels"]) >= 2 and "no finding" not in drawn["panels"]
    image = matplotlib.image.imread(path)
    assert image.shape[1] > image.shape[0]  # panels side by side
    assert "most present findings" in OVERLAY_RULE
    # no finding locations (a manifest without masks): no figure, no error
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "manifest.jsonl").write_text(json.dumps({k: v for k, v in rows[0].items() if not k.startswith("finding_")})
                                         + "\n")
    assert plot_attention_overlay(model, processor, bare, None, tmp_path / "none.png") is None


def test_evaluate_writes_the_attention_localization_block(bench, tiny_model_and_processor, tmp_path):
    from dia_llama.evaluation import evaluate_model

    model, processor = tiny_model_and_processor
    metrics = evaluate_model(model, bench, "test", tmp_path / "eval", batch_size=4, max_new_tokens=4,
                             processor=processor, progress=False)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    block = saved["attention_localization"]
    assert block == json.loads(json.dumps(metrics["attention_localization"]))
    rows = [json.loads(line) for line in (bench / "manifest.jsonl").read_text().splitlines()]
    pairs = sum(len(r["finding_boxes"]) for r in rows if r["split"] == "test")
    overall = block["overall"]
    assert overall["cases"] == pairs > 0  # every (test case, present finding with a region)
    for key in ("pointing_game", "pointing_game_uniform", "mass_in_region", "mass_uniform"):
        assert 0.0 <= overall[key] <= 1.0
    assert 0.0 < overall["mass_uniform"] < overall["pointing_game_uniform"] < 1.0  # a region is a few patches
    assert set(block["per_class"]) <= set(model.config.disease_names) - {"no finding"}
    assert sum(v["cases"] for v in block["per_class"].values()) == pairs
    assert "attention_localization" not in evaluate_model(
        model, bench, "test", tmp_path / "eval_off", max_new_tokens=2, processor=processor, progress=False,
        localization=False)
