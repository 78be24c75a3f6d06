"""DiaLlamaConfig / DiaLlamaVisionConfig: validation and the paper's defaults."""




import pytest

import dia_llama
from dia_llama import DiaLlamaConfig


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(disease_pooling="max"), "disease_pooling"),
        (dict(diagnosis_head="mlp"), "diagnosis_head"),
        (dict(prompt_type="soft"), "prompt_type"),
        (dict(disease_names="chexpert99"), "unknown disease set"),
        (dict(disease_names=["a", "a"]), "duplicates"),
        (dict(prototype_temperature=5.0), "temperature"),
        (dict(prompt_template="no fields"), "prompt_template"),
        (dict(vision_config=dict(volume_size=(60, 64, 32), patch_size=(8, 8, 4))), "multiple of patch_size"),
        (dict(vision_config=dict(patch_embedding="unet")), "patch_embedding"),
        (dict(vision_config=dict(volume_size=(64, 64, 36), patch_size=(8, 8, 6), patch_embedding="conv")),
         "power of 2"),
        (dict(vision_config=dict(patch_embedding="conv", conv_stem_channels=(16, 32, 64))), "at most 2\\*\\*4"),
        (dict(temperature_bounds=(0.5, 0.1)), "temperature_bounds"),
        (dict(dp_loss_weight=-1.0), "loss weights"),
    ],
)
def test_invalid_config_values_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiaLlamaConfig(**kwargs)


def test_config_defaults_are_the_papers():
    cfg = DiaLlamaConfig()
    vc = cfg.vision_config
    assert vc.volume_size == [256, 256, 64] and vc.patch_size == [32, 32, 4] and vc.num_patches == 1024
    assert (vc.hidden_size, vc.num_hidden_layers, vc.num_attention_heads, vc.intermediate_size) == (768, 12, 8, 2048)
    assert (vc.perceiver_depth, vc.num_latents) == (6, 32) and cfg.num_image_tokens == 32
    assert cfg.dp_loss_weight == 4 and cfg.lm_loss_weight == 1
    assert (cfg.disease_names == dia_llama.CHEXPERT_14
            and len(DiaLlamaConfig(disease_names="ctrate18").disease_names) == 18)
    assert vc.patch_embedding == "linear"
    assert cfg.get_text_config().model_type == "llama"
