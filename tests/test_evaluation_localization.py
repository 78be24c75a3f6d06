"""Attention localisation: the pointing game and the attention mass on hand-made maps, their uniform baselines, the
aggregation, and the block `evaluate_model` writes for a model on a small synthetic benchmark."""

import json

import numpy as np
import pytest
import torch

from dia_llama.evaluation.localization import (
    location_rows,
    model_attention_localization,
    pointing_scores,
    summarize_localization,
)


def _region(*cells, shape=(4, 4, 4)):
    region = np.zeros(shape, bool)
    for cell in cells:
        region[cell] = True
    return region


def test_pointing_hit_miss_and_the_one_patch_margin():
    region = _region((1, 1, 1))  # dilated by one patch: the 3x3x3 block (0..2)^3, 27 of 64 cells
    attention = np.full((4, 4, 4), 0.1)
    attention[1, 1, 1] = 5.0
    hit = pointing_scores(attention, region)
    assert hit["pointing_game"] == 1.0
    assert hit["pointing_game_uniform"] == pytest.approx(27 / 64)
    assert hit["mass_in_region"] == pytest.approx(5.0 / (5.0 + 63 * 0.1))  # normalised by the map's sum
    assert hit["mass_uniform"] == pytest.approx(1 / 64)

    attention = np.full((4, 4, 4), 0.1)
    attention[2, 2, 2] = 5.0  # next to the region: inside the one-patch margin
    assert pointing_scores(attention, region)["pointing_game"] == 1.0
    assert pointing_scores(attention, region, dilation=0)["pointing_game"] == 0.0
    attention = np.full((4, 4, 4), 0.1)
    attention[3, 3, 3] = 5.0  # two patches away: a miss
    miss = pointing_scores(attention, region)
    assert miss["pointing_game"] == 0.0
    assert miss["mass_in_region"] == pytest.approx(0.1 / (5.0 + 63 * 0.1))


def test_uniform_attention_scores_its_own_baseline():
    """A flat map's maxima are every patch: ties share the point, so it scores exactly the uniform baseline."""
    region = _region((0, 0, 0), (0, 1, 0), (3, 3, 3))
    scores = pointing_scores(np.ones((4, 4, 4)), region)
    assert scores["pointing_game"] == pytest.approx(scores["pointing_game_uniform"])
    assert scores["mass_in_region"] == pytest.approx(scores["mass_uniform"]) == pytest.approx(3 / 64)
    # dilated: (0..1, 0..2, 0..1) = 12 cells around the first two, (2..3)^3 = 8 around the third
    assert scores["pointing_game_uniform"] == pytest.approx(20 / 64)
    # two tied maxima, one inside, one outside: half a point
    attention = np.zeros((4, 4, 4))
    attention[0, 0, 0] = attention[3, 0, 3] = 1.0
    assert pointing_scores(attention, region)["pointing_game"] == 0.5


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="differ"):
        pointing_scores(np.ones((4, 4, 4)), np.ones((4, 4, 2), bool))
    with pytest.raises(ValueError, match="empty"):
        pointing_scores(np.ones((4, 4, 4)), np.zeros((4, 4, 4), bool))
    with pytest.raises(ValueError, match="non-negative"):
        pointing_scores(-np.ones((4, 4, 4)), _region((0, 0, 0)))
    with pytest.raises(ValueError, match="finite"):
        pointing_scores(np.full((4, 4, 4), np.nan), _region((0, 0, 0)))


def test_summary_per_class_and_overall():
    rows = [("heart", {"pointing_game": 1.0, "pointing_game_uniform": 0.2, "mass_in_region": 0.5, "mass_uniform": 0.1}),
            ("heart", {"pointing_game": 0.0, "pointing_game_uniform": 0.4, "mass_in_region": 0.1, "mass_uniform": 0.1}),
            ("nodule", {"pointing_game": 1.0, "pointing_game_uniform": 0.0, "mass_in_region": 0.9,
                        "mass_uniform": 0.0})]
    out = summarize_localization(rows, extents={"heart": "local"}, order=["nodule", "edema", "heart"])
    assert list(out["per_class"]) == ["nodule", "heart"]  # the given order, classes without cases left out
    assert out["per_class"]["heart"] == {"cases": 2, "pointing_game": 0.5, "pointing_game_uniform": pytest.approx(0.3),
                                         "mass_in_region": pytest.approx(0.3), "mass_uniform": 0.1, "extent": "local"}
    assert out["overall"]["cases"] == 3
    assert out["overall"]["pointing_game"] == pytest.approx(2 / 3)  # pooled over (case, finding) pairs
    assert out["overall"]["mass_in_region"] == pytest.approx(0.5)
    empty = summarize_localization([])
    assert empty["overall"]["cases"] == 0 and empty["per_class"] == {}


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory):
    from dia_llama.data.synthetic import synthesize_benchmark

    out = tmp_path_factory.mktemp("loc_bench")
    manifest = synthesize_benchmark(out, num_cases=12, seed=3, volume_size=(64, 64, 32), progress=False)
    return manifest.parent


class _Oracle(torch.nn.Module):
    """Stands in for a model: its attention is each case's true region (static: one fixed patch)."""

    def __init__(self, config, maps):
        super().__init__()
        self.config, self.maps = config, maps

    def diagnose(self, pixel_values):
        from dia_llama.modeling_dia_llama import DiaLlamaDiagnosis

        return DiaLlamaDiagnosis(attention=self.maps(pixel_values))


def test_model_localization_on_a_synthetic_benchmark(small_bench):
    from dia_llama.configuration_dia_llama import DiaLlamaConfig, DiaLlamaVisionConfig
    from dia_llama.data.synthetic.locations import finding_masks, pool_to_patch_grid

    rows, root = location_rows(small_bench)
    assert root == small_bench and len(rows) == 12
    config = DiaLlamaConfig(vision_config=DiaLlamaVisionConfig(volume_size=(64, 64, 32), patch_size=(8, 8, 4)))
    names, grid = list(config.disease_names), tuple(config.vision_config.grid_size)
    ids = sorted(rows)
    # the "volume" handed to the model is the case's index, so the oracle knows which case it sees
    load = lambda case_id: torch.tensor([float(ids.index(case_id))])  # noqa: E731

    def truth(pixel_values):
        maps = torch.full((len(pixel_values), len(names), int(np.prod(grid))), 1e-5)
        for b, index in enumerate(pixel_values[:, 0].long().tolist()):
            for disease, mask in finding_masks(rows[ids[index]], root).items():
                region = pool_to_patch_grid(mask, grid).reshape(-1)
                maps[b, names.index(disease), torch.from_numpy(region)] = 1.0
        return maps / maps.sum(-1, keepdim=True)

    found = model_attention_localization(_Oracle(config, truth), ids, (rows, root), load, batch_size=5)
    n_findings = sum(1 for r in rows.values() for d, e in r["finding_extent"].items() if e != "global"
                     and finding_masks(r, root)[d].any())
    assert found["overall"]["cases"] == n_findings > 0
    assert found["overall"]["pointing_game"] == 1.0
    assert found["overall"]["mass_in_region"] > 0.9 > found["overall"]["mass_uniform"]
    assert "no finding" not in found["per_class"]
    assert all(v["extent"] in ("local", "diffuse") for v in found["per_class"].values())

    corner = torch.zeros(len(names), int(np.prod(grid)))
    corner[:, 0] = 1.0  # a static (L, M) map on patch (0, 0, 0), outside the body: the attention sink
    sink = model_attention_localization(_Oracle(config, lambda pv: corner), ids, (rows, root), load)
    assert sink["overall"]["pointing_game"] == 0.0 and sink["overall"]["mass_in_region"] == 0.0
    assert sink["overall"]["pointing_game_uniform"] == found["overall"]["pointing_game_uniform"]
    assert model_attention_localization(_Oracle(config, lambda pv: None), ids, (rows, root), load) is None


def test_location_rows_without_locations(tmp_path):
    assert location_rows(tmp_path) is None  # no manifest
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"id": "a", "volume": "a.nii.gz", "report": "r"}) + "\n")
    assert location_rows(tmp_path) is None  # a manifest without finding masks
    (tmp_path / "manifest.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match=r"manifest.jsonl: line 1 is not valid JSON"):
        location_rows(tmp_path)
