"""The vision side: the convolutional stem and the blob features (`modeling_dia_llama_vision`)."""

import pytest
import torch

from dia_llama import DiaLlamaConfig, DiaLlamaForConditionalGeneration
from dia_llama.configuration_dia_llama import DiaLlamaVisionConfig
from dia_llama.modeling_dia_llama import DiaLlamaBlobFeatures, log_frequency_response
from dia_llama.presets import build_model_and_processor

SHAPE = (32, 32, 16)


def conv_stem_tower(patch_size=(8, 8, 4), channels=(4, 8)):
    from dia_llama.configuration_dia_llama import DiaLlamaVisionConfig
    from dia_llama.modeling_dia_llama import DiaLlamaVisionTower

    config = DiaLlamaVisionConfig(volume_size=(32, 32, 16), num_channels=1, patch_size=patch_size, hidden_size=12,
                                  num_hidden_layers=1, num_attention_heads=2, head_dim=6, intermediate_size=24,
                                  patch_embedding="conv", conv_stem_channels=channels)
    return DiaLlamaVisionTower(config).eval(), config


def test_conv_patch_embedding_halves_each_axis_until_the_patch_size():
    tower, config = conv_stem_tower()
    strides = [layer.conv.stride for layer in tower.patch_embed.layers]
    assert strides == [(2, 2, 2), (2, 2, 2), (2, 2, 1)]
    widths = [layer.conv.out_channels for layer in tower.patch_embed.layers]
    assert widths == [4, 8, 12]
    tokens = tower.patch_embed(torch.zeros(2, 1, 32, 32, 16))
    assert tokens.shape == (2, config.num_patches, 12) == (2, 4 * 4 * 4, 12)


def test_conv_patch_embedding_tokens_are_centred_on_their_patches():
    """With binomial (peaked, symmetric) kernels each token's receptive field peaks at its patch centre, so a change
    anywhere in patch (h, w, d), corners included, moves token h·W·D + w·D + d the most (the linear embedding's
    order)."""
    tower, config = conv_stem_tower()
    binomial = {4: torch.tensor([1.0, 3.0, 3.0, 1.0]), 3: torch.tensor([1.0, 2.0, 1.0])}
    with torch.no_grad():
        for layer in tower.patch_embed.layers:
            kh, kw, kd = layer.conv.kernel_size
            kernel = torch.einsum("i,j,k->ijk", binomial[kh], binomial[kw], binomial[kd])
            layer.conv.weight.copy_(kernel.expand_as(layer.conv.weight))
    _, w, d = config.grid_size
    base = torch.zeros(1, 1, 32, 32, 16)
    for patch in ((2, 1, 3), (1, 2, 0)):
        for offset in ((0, 0, 0), (7, 7, 3), (3, 4, 1), (0, 7, 2)):
            bumped = base.clone()
            bumped[0, 0, 8 * patch[0] + offset[0], 8 * patch[1] + offset[1], 4 * patch[2] + offset[2]] = 1.0
            with torch.no_grad():
                change = (tower.patch_embed(bumped) - tower.patch_embed(base)).abs().sum(-1)[0]  # (M,)
            assert int(change.argmax()) == patch[0] * w * d + patch[1] * d + patch[2], (patch, offset)


def test_conv_patch_embedding_batch_norm_statistics_round_trip(tmp_path):
    """The stem's BatchNorm running statistics are trained state: saved, loaded and used in eval mode."""
    model, _ = build_model_and_processor("tiny", vision_overrides={"patch_embedding": "conv"})
    stem = model.model.vision_tower.patch_embed
    model.train()
    with torch.no_grad():
        model.model.encode_volume(torch.rand(2, 1, 64, 64, 32))
    assert int(stem.layers[0].norm.num_batches_tracked) == 1
    model.save_pretrained(tmp_path)
    loaded = DiaLlamaForConditionalGeneration.from_pretrained(tmp_path).eval()
    norm, loaded_norm = stem.layers[0].norm, loaded.model.vision_tower.patch_embed.layers[0].norm
    assert torch.equal(norm.running_mean, loaded_norm.running_mean)
    assert torch.equal(norm.running_var, loaded_norm.running_var)
    x = torch.rand(1, 1, 64, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().model.encode_volume(x), loaded.model.encode_volume(x),
                                   rtol=1e-5, atol=1e-6)


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
    torch.testing.assert_close(features.features(one.expand(-1, 3, -1, -1, -1)), features.features(one),
                               rtol=1e-5, atol=1e-5)


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
    assert not model.config.disease_max_pooling  # the attention alone carries a finding (session 9)
    assert model.config.disease_attention_min_intensity == 0.05
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
        torch.testing.assert_close(model.model.diagnose(x).logits, loaded.model.diagnose(x).logits,
                                   rtol=1e-5, atol=1e-5)
    model.train()  # the branch's output reaches the blob embedding
    _, logits = model.model.disease_branch(tower(x), patch_mask=model.model.disease_patch_mask(x))
    logits.sum().backward()
    assert blob.weight.grad is not None and blob.weight.grad.abs().sum() > 0
