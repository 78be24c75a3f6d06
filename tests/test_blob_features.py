"""Blob features (LoG responses per patch, an extension of the tiny preset) and the disease branch's max pooling."""

import math

import pytest
import torch

from dia_llama.configuration_dia_llama import DiaLlamaConfig, DiaLlamaVisionConfig
from dia_llama.modeling_dia_llama import (
    DiaLlamaBlobFeatures,
    DiaLlamaForConditionalGeneration,
    log_frequency_response,
)
from dia_llama.presets import build_model_and_processor

SHAPE = (32, 32, 16)


def _vision_config(**overrides):
    return DiaLlamaVisionConfig(**{**dict(volume_size=SHAPE, num_channels=1, patch_size=(8, 8, 4), hidden_size=12,
                                          num_attention_heads=2, head_dim=6, blob_filter_sigmas=[(1.2, 1.2, 0.8)]),
                                   **overrides})


def _volume_with(kind: str, centre=(13, 18, 9)) -> torch.Tensor:
    """A [0, 1] volume of air (0.1) with a soft-tissue (0.55) `ball` of radius ~2 voxels or a `wall` (half-space)."""
    grid = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in SHAPE], indexing="ij")
    x = torch.full(SHAPE, 0.1)
    if kind == "ball":
        dist = torch.sqrt(sum(((g - c) / s) ** 2 for g, c, s in zip(grid, centre, (2.0, 2.0, 1.3))))
        x[dist <= 1.0] = 0.55
    elif kind == "wall":
        x[grid[0] >= centre[0]] = 0.55
    return x[None, None]  # (1, 1, H, W, D)


def test_log_filter_has_no_dc_and_answers_a_ball_more_than_a_wall():
    response = log_frequency_response(SHAPE, (1.2, 1.2, 0.8))
    assert response.shape == (32, 32, 9)
    assert response[0, 0, 0] == 0  # a uniform volume gives no response
    features = DiaLlamaBlobFeatures(_vision_config())
    ball = features.features(_volume_with("ball"))  # (1, M, 1)
    wall = features.features(_volume_with("wall"))
    air = features.features(_volume_with("none"))
    assert ball.shape == (1, 4 * 4 * 4, 1)
    assert air.abs().max() < 1e-4
    # the ball's patch (h 13 // 8 = 1, w 18 // 8 = 2, d 9 // 4 = 2) holds the strongest response
    assert ball[0, :, 0].argmax().item() == (1 * 4 + 2) * 4 + 2
    assert ball.max() > 0.5 and ball.max() > 2 * wall.max(), (ball.max(), wall.max())


def test_blob_features_embed_into_the_token_width():
    features = DiaLlamaBlobFeatures(_vision_config(blob_filter_sigmas=[(1.2, 1.2, 0.8), (2.0, 2.0, 1.2)]))
    assert features.features(_volume_with("ball")).shape == (1, 64, 2)
    assert features(_volume_with("wall").expand(3, -1, -1, -1, -1)).shape == (3, 64, 12)


def test_blob_features_follow_the_channel_mean():
    features = DiaLlamaBlobFeatures(_vision_config(num_channels=3))
    one = _volume_with("ball")
    assert torch.allclose(features.features(one.expand(-1, 3, -1, -1, -1)), features.features(one), atol=1e-5)


def test_blob_config_validates():
    with pytest.raises(ValueError, match="blob_filter_sigmas"):
        DiaLlamaVisionConfig(blob_filter_sigmas=[(1.0, 1.0)])
    with pytest.raises(ValueError, match="blob_filter_sigmas"):
        DiaLlamaVisionConfig(blob_filter_sigmas=[(1.0, 0.0, 1.0)])
    assert DiaLlamaVisionConfig().blob_filter_sigmas == []  # off in the paper's configuration
    assert DiaLlamaConfig().disease_max_pooling is False
    with pytest.raises(ValueError, match="disease_max_pooling=False"):
        DiaLlamaConfig(legacy_disease_pooling=True, disease_max_pooling=True)


def test_tiny_preset_blob_features_initialise_round_trip_and_train(tmp_path):
    model, _ = build_model_and_processor("tiny")
    tower = model.model.vision_tower
    assert model.config.disease_max_pooling
    blob = tower.blob_features
    assert blob is not None and blob.weight.shape == (96, 1)
    assert 0.7 < blob.weight.std().item() < 1.3 and torch.count_nonzero(blob.bias) == 0  # _init_weights: O(1)
    model.save_pretrained(tmp_path)
    loaded = DiaLlamaForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.config.vision_config.blob_filter_sigmas == model.config.vision_config.blob_filter_sigmas
    x = torch.rand(2, 1, 64, 64, 32)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(model.model.diagnose(x).logits, loaded.model.diagnose(x).logits, atol=1e-5)
    model.train()  # the branch's output reaches the blob embedding
    _, logits = model.model.disease_branch(tower(x))
    logits.sum().backward()
    assert blob.weight.grad is not None and blob.weight.grad.abs().sum() > 0


def test_max_pooling_adds_the_patchwise_maximum():
    model, _ = build_model_and_processor("tiny", disease_max_pooling=False)
    branch = model.model.disease_branch
    feats = torch.randn(2, 512, 96)
    plain = branch.pool(feats)
    branch.max_pooling = True
    assert torch.allclose(branch.pool(feats), plain + feats.amax(dim=1, keepdim=True))


def test_max_pooling_carries_one_patch_finding_from_the_start():
    """One patch marks the finding: the max-pooled feature moves by the full signal, the near-uniform DAA by ~1/M."""
    model, _ = build_model_and_processor("tiny")
    branch = model.model.disease_branch
    feats = torch.zeros(1, 512, 96)
    marked = feats.clone()
    marked[0, 123, 5] = 1.0
    with torch.no_grad():
        shift = (branch.pool(marked) - branch.pool(feats))[0, :, 5]  # (L,)
    assert torch.all(shift > 1.0 - 1e-6)
    branch.max_pooling = False
    with torch.no_grad():
        shift = (branch.pool(marked) - branch.pool(feats))[0, :, 5]
    assert torch.all(shift < 20 / 512) and math.isfinite(shift.sum().item())
