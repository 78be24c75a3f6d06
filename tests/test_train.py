"""Training with the HF Trainer: a few steps end to end, loss logging, LoRA, exact resume, 2-process DDP, DeepSpeed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dia_llama.train import ModelArguments, apply_lora, build_model, parse_args
from dia_llama.train import main as train_main

REPO = Path(__file__).resolve().parents[1]


def free_port() -> str:
    """A free loopback port for the rendezvous (a fixed one clashes with another run on the same machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    from dia_llama.data.synthetic import synthesize_benchmark

    out = tmp_path_factory.mktemp("synth")
    synthesize_benchmark(out, num_cases=24, seed=0, volume_size=(64, 64, 32), num_workers=1, progress=False)
    return out


def common_args(data, out, steps=4, **extra):
    args = ["--preset", "tiny", "--data", str(data), "--output_dir", str(out), "--max_steps", str(steps),
            "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--logging_steps", "1",
            "--save_strategy", "no", "--eval_strategy", "no", "--use_cpu", "true", "--report_to", "none",
            "--disable_tqdm", "true", "--seed", "0", "--dataloader_num_workers", "0"]
    for key, value in extra.items():
        args += [f"--{key}", str(value)]
    return args


def test_train_saves_a_loadable_checkpoint_and_logs_components(synth_data, tmp_path):
    out = tmp_path / "run"
    assert train_main(common_args(synth_data, out, gradient_accumulation_steps=2, calibrate_thresholds="true")) == 0
    for name in ("config.json", "model.safetensors", "generation_config.json", "processor_config.json",
                 "tokenizer.json", "modeling_dia_llama.py", "volume_io.py", "model_card.md",
                 "threshold_calibration.json"):
        assert (out / name).exists(), name
    calibration = json.loads((out / "threshold_calibration.json").read_text())
    thresholds = json.loads((out / "config.json").read_text())["diagnosis_thresholds"]
    assert thresholds == [d["threshold"] for d in calibration["per_disease"].values()] and len(thresholds) == 14
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["max_new_tokens"] == 300 and gen["do_sample"] is False
    state = json.loads((out / "trainer_state.json").read_text())
    logs = [h for h in state["log_history"] if "loss" in h]
    assert len(logs) == 4
    for h in logs:
        # the logged loss is lm + 4·dp, NOT multiplied by the 2 accumulation steps
        assert h["loss"] == pytest.approx(h["lm_loss"] + 4 * h["dp_loss"], rel=0.02)
    from transformers import AutoModelForImageTextToText

    import dia_llama  # noqa: F401

    AutoModelForImageTextToText.from_pretrained(out)


def test_repeat_factor_sampling_lengthens_the_epoch_with_rare_cases(synth_data, tmp_path):
    from dia_llama.data import load_ct_report_dataset
    from dia_llama.training.sampling import case_repeat_factors, repeated_indices

    labels = load_ct_report_dataset(synth_data)["train"]["labels"]
    repeated = len(repeated_indices(case_repeat_factors(labels, 0.5), seed=0))
    assert repeated > len(labels)
    out = tmp_path / "run"
    assert train_main(common_args(synth_data, out, steps=2, repeat_factor_threshold=0.5)) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(2 / -(-repeated // 2))  # 2 steps of batch 2 over the repeated cases


def test_lora_targets_llm_and_trains_vision_side(tmp_path):
    model, _ = build_model(ModelArguments(preset="tiny"))
    peft_model = apply_lora(model, ModelArguments(lora="on"))
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("q_proj.lora_A" in n for n in trainable) and any("v_proj.lora_B" in n for n in trainable)
    assert not any("k_proj" in n for n in trainable)
    assert any("vision_tower" in n for n in trainable) and any("disease_branch" in n for n in trainable)
    assert any("trainable_tokens" in n for n in trainable)  # <image_start>/<image_end> embeddings
    frozen_llm = [n for n, p in peft_model.named_parameters() if "language_model" in n and "mlp" in n]
    assert frozen_llm and not any(n in trainable for n in frozen_llm)


def test_vision_config_overrides_the_preset_tower():
    model, _ = build_model(ModelArguments(preset="tiny"))
    assert model.config.vision_config.patch_embedding == "conv"  # the tiny preset's stem
    args = ModelArguments(preset="tiny", vision_config='{"patch_embedding": "linear", "num_hidden_layers": 3}')
    model, _ = build_model(args)
    vc = model.config.vision_config
    assert (vc.patch_embedding, vc.num_hidden_layers) == ("linear", 3) and len(model.model.vision_tower.layers) == 3
    assert type(model.model.vision_tower.patch_embed).__name__ == "DiaLlamaPatchEmbedding"
    with pytest.raises(ValueError, match="unknown fields \\['patch_sise'\\]"):
        build_model(ModelArguments(preset="tiny", vision_config='{"patch_sise": [8, 8, 4]}'))
    with pytest.raises(ValueError, match="JSON object"):
        build_model(ModelArguments(preset="tiny", vision_config="patch_embedding=linear"))


def test_body_only_attention_switch():
    """--disease_attention_min_intensity: a number, or 'none' for attention over all patches (the ablation's paper
    setting); the tiny preset's default is 0.05."""
    assert build_model(ModelArguments(preset="tiny"))[0].config.disease_attention_min_intensity == 0.05
    model, _ = build_model(ModelArguments(preset="tiny", disease_attention_min_intensity="none"))
    assert model.config.disease_attention_min_intensity is None
    model, _ = build_model(ModelArguments(preset="tiny", disease_attention_min_intensity="0.2"))
    assert model.config.disease_attention_min_intensity == 0.2
    with pytest.raises(ValueError, match="takes a number or 'none', got 'air'"):
        build_model(ModelArguments(preset="tiny", disease_attention_min_intensity="air"))


def test_shipped_recipes_by_name_and_dashed_options():
    """`dia-llama train tiny_cpu` (what the demo trains): a recipe shipped in the package, named without a path."""
    from dia_llama.training import recipe_path, shipped_recipes

    assert {"tiny_cpu", "paper"} <= set(shipped_recipes())
    model_args, _, training_args = parse_args(["tiny_cpu", "--max_steps", "3"])
    assert model_args.preset == "tiny" and model_args.calibrate_thresholds
    assert training_args.max_steps == 3 and training_args.per_device_train_batch_size == 4
    assert training_args.lr_scheduler_type == "cosine" and training_args.weight_decay == 0.0
    assert recipe_path("tiny_cpu").is_file()
    with pytest.raises(ValueError, match="no shipped recipe"):
        recipe_path("tiny_gpu")


def test_yaml_recipe_parses_with_overrides(tmp_path, monkeypatch):
    pytest.importorskip("deepspeed",
                        reason="the paper recipe names a DeepSpeed config: pip install dia-llama[deepspeed]")
    monkeypatch.chdir(tmp_path)  # the recipe's DeepSpeed file is found beside the recipe, from any folder
    # bf16 needs a GPU: the CPU override shows command-line values win over the file
    model_args, data_args, training_args = parse_args(["paper", "--max_steps", "7",
                                                       "--output_dir", str(tmp_path), "--bf16", "false",
                                                       "--use_cpu", "true"])
    assert model_args.preset == "paper" and model_args.lora == "on" and model_args.lora_r == 8
    assert training_args.max_steps == 7 and training_args.learning_rate == 5e-5
    assert training_args.lr_scheduler_type == "constant_with_warmup" and training_args.warmup_steps == 20
    assert training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * 2 == 16
    assert training_args.activation_checkpointing and not training_args.bf16
    assert training_args.hf_deepspeed_config.config["zero_optimization"]["stage"] == 2
    assert data_args.data_format == "ctrg" and model_args.dp_loss_weight == 4.0


def test_resume_after_interruption_matches_uninterrupted(synth_data, tmp_path):
    """A run killed after its step-3 checkpoint and resumed ends with the same weights as an uninterrupted run."""
    full = tmp_path / "full"
    train_main(common_args(synth_data, full, steps=6, save_strategy="steps", save_steps=3))
    killed = tmp_path / "killed"
    script = (
        "import sys\n"
        "from transformers import TrainerCallback\n"
        "import dia_llama.train as t\n"
        "class Kill(TrainerCallback):\n"
        "    def on_step_end(self, args, state, control, **kw):\n"
        "        if state.global_step == 4:\n"
        "            import os; os._exit(17)\n"
        "orig = t.DiaLlamaTrainer.__init__\n"
        "def init(self, *a, **k):\n"
        "    orig(self, *a, **k); self.add_callback(Kill())\n"
        "t.DiaLlamaTrainer.__init__ = init\n"
        f"t.main({common_args(synth_data, killed, steps=6, save_strategy='steps', save_steps=3)!r})\n"
    )
    # the same thread count as this process: conv3d's CPU gradients depend on it by a few ulps, and Adam turns an ulp
    # on a near-zero gradient into a full lr-sized step
    script = f"import torch; torch.set_num_threads({torch.get_num_threads()})\n" + script
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 17, result.stderr[-2000:]
    assert (killed / "checkpoint-3").exists() and not (killed / "model.safetensors").exists()
    train_main(common_args(synth_data, killed, steps=6, save_strategy="steps", save_steps=3,
                           resume_from_checkpoint=killed / "checkpoint-3"))
    a, b = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    worst, key = max((float((a[k].float() - b[k].float()).abs().max()), k) for k in a)
    assert worst < 1e-5, (worst, key)  # identical up to float noise


DDP_SCRIPT = r"""
import json, os, sys, torch
import dia_llama.train as t
seen = []
orig_call = t.DiaLlamaDataCollator.__call__
def call(self, examples):
    seen.extend(e["id"] for e in examples)
    return orig_call(self, examples)
t.DiaLlamaDataCollator.__call__ = call
orig_save = t.save_final_model
def save(trainer, model, processor, out, merge=True):
    return orig_save(trainer, model, processor, out, merge)
rank = int(os.environ.get("RANK", 0))
args = json.loads(sys.argv[1])
model_args, data_args, training_args = t.parse_args(args)
import transformers
orig_train = transformers.Trainer.train
def train(self, *a, **k):
    result = orig_train(self, *a, **k)
    checksum = float(sum(p.detach().double().sum() for p in self.model.parameters()))
    out = {"rank": rank, "world": self.args.world_size, "seen": seen, "checksum": checksum}
    open(os.path.join(training_args.output_dir, f"rank{rank}.json"), "w").write(json.dumps(out))
    return result
transformers.Trainer.train = train
t.train(model_args, data_args, training_args)
"""


def test_two_process_ddp_on_cpu(synth_data, tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    script = tmp_path / "ddp_script.py"
    script.write_text(DDP_SCRIPT)
    args = common_args(synth_data, out, steps=3, ddp_backend="gloo")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": port}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           str(script), json.dumps(args)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == 2
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)  # replicas agree
    assert not set(ranks[0]["seen"]) & set(ranks[1]["seen"])  # data sharded across ranks
    # 3 steps × batch 2 per rank (the loader may have collated one batch ahead)
    assert len(ranks[0]["seen"]) >= 3 * 2 and len(ranks[1]["seen"]) >= 3 * 2
    assert (out / "model.safetensors").exists()


def test_deepspeed_zero2_config_validates(tmp_path):
    pytest.importorskip("deepspeed", reason="deepspeed is an optional extra: pip install dia-llama[deepspeed]")
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path),
                             deepspeed=str(REPO / "src" / "dia_llama" / "recipes" / "deepspeed_zero2.json"),
                             per_device_train_batch_size=2, gradient_accumulation_steps=4, use_cpu=True)
    ds = args.hf_deepspeed_config.config
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["train_micro_batch_size_per_gpu"] == 2 and ds["gradient_accumulation_steps"] == 4
    assert "train_batch_size" not in json.loads(
        (REPO / "src" / "dia_llama" / "recipes" / "deepspeed_zero2.json").read_text())


def test_deepspeed_zero2_two_processes_on_cpu(synth_data, tmp_path):
    """The ZeRO-2 config trains for real: 2 CPU processes over gloo (the JSON leaves train_batch_size out)."""
    pytest.importorskip("deepspeed", reason="deepspeed is an optional extra: pip install dia-llama[deepspeed]")
    out = tmp_path / "zero2"
    args = common_args(synth_data, out, steps=2,
                       deepspeed=REPO / "src" / "dia_llama" / "recipes" / "deepspeed_zero2.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
           "-m", "dia_llama.train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 2 and all(0 < v < 100 for v in losses)
    assert (out / "model.safetensors").exists()


def test_push_to_hub_sends_the_merged_model_processor_and_card_in_one_commit(synth_data, tmp_path,
                                                                             hub_server_fixture):
    """`train --push_to_hub` against the loopback Hub: the final folder (LoRA merged), processor, remote code,
    training.json and the card arrive in ONE commit; the card has no local path and parses with `ModelCard.load`."""
    from huggingface_hub import ModelCard

    from helpers.hub_server import run_client

    server, repo, out = hub_server_fixture, "me/dia-llama-trained", tmp_path / "run"
    args = common_args(synth_data, out, steps=2, lora="on", push_to_hub="true", hub_model_id=repo)
    run_client(f"import sys; from dia_llama.train import main; sys.exit(main({args!r}))", server.endpoint,
               timeout=600)

    commits = server.commits(repo)
    final = commits[-1]
    assert final.title.startswith("Dia-LLaMA: final model")
    shipped = {"model.safetensors", "config.json", "generation_config.json", "processor_config.json", "tokenizer.json",
               "training.json", "README.md", "modeling_dia_llama.py", "pipeline_dia_llama.py", "volume_io.py"}
    assert shipped <= set(final.added), sorted(final.added)
    weights = final.files["model.safetensors"].content
    header = json.loads(weights[8:8 + int.from_bytes(weights[:8], "little")])
    assert header and not [k for k in header if "lora_" in k]  # merged: plain weights only
    assert "train_args.json" not in final.files and not any(f.startswith("checkpoint-") for f in final.files)

    readme = final.files["README.md"].content.decode()
    (tmp_path / "README.md").write_text(readme)
    for text in (readme, (out / "model_card.md").read_text()):
        assert str(tmp_path) not in text and str(synth_data) not in text and "/tmp/" not in text
        assert not re.search(r"(^|[\s(`'\"])/(home|root|tmp|work|data|mnt|Users)/", text)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.pipeline_tag == "other" and card.data.model_name == "dia-llama-trained"
    assert "dia-llama synthetic chest-CT benchmark" in card.text and "| lora_merged | True |" in card.text
    assert f'pipeline(model="{repo}", trust_remote_code=True)' in card.text
    local = ModelCard.load(out / "model_card.md")
    assert local.data.to_dict() == card.data.to_dict()
    training = json.loads((out / "training.json").read_text())
    assert training["dataset"]["name"] == "dia-llama synthetic chest-CT benchmark" and training["dataset"]["id"] is None
    assert sum(training["dataset"]["split_counts"].values()) == 24 and training["recipe"]["lora"] is True


@pytest.mark.parametrize("stage", [2, 3])
def test_multi_node_accelerate_configs_launch_two_nodes(stage):
    """configs/accelerate/multi_node_zero{2,3}.yaml as `accelerate launch` reads them on the second node: 2 nodes × 8
    processes, node rank 1, a static rendezvous at the main node, our ZeRO JSON (nothing is launched)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import prepare_deepspeed_cmd_env

    config = REPO / "configs" / "accelerate" / f"multi_node_zero{stage}.yaml"
    args = launch_command_parser().parse_args(["--config_file", str(config), "--machine_rank", "1",
                                               "--main_process_ip", "192.168.1.5", "-m", "dia_llama.train", "paper"])
    args, defaults, _ = _validate_launch_command(args)
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as `launch_command` does
    _, env = prepare_deepspeed_cmd_env(args)
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "8", 1)
    assert args.rdzv_backend == "static" and args.rdzv_endpoint == "192.168.1.5:29500"
    assert args.training_script == "dia_llama.train" and args.module
    ds_config = REPO / env["ACCELERATE_DEEPSPEED_CONFIG_FILE"]
    assert json.loads(ds_config.read_text())["zero_optimization"]["stage"] == stage
    assert env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == str(stage == 3).lower()
