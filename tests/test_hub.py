"""Publishing: staging, model card, one-commit push to a loopback Hub, download and revision pinning; a real Dia-LLaMA
checkpoint through the loopback Hub (push → from_pretrained with the package and as remote code → snapshot_download,
logits identical); the dry-run folder loads without the package."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from dia_llama.cli import main
from dia_llama.hub import (
    HubStagingError,
    push_to_hub,
    render_model_card,
    stage_for_hub,
    validate_model_card,
)
from helpers.hub_server import inprocess_client, run_client, run_client_json
from helpers.remote_code import BLOCK_DIA_LLAMA

METRICS = {
    "dataset": {"name": "CTRG-Chest-548K", "split": "test"},
    "nlg": {"mode": "coco_raw", "BLEU-1": 51.23, "BLEU-2": 40.85, "BLEU-3": 34.42, "BLEU-4": 29.98,
            "METEOR": 26.55, "ROUGE-L": 42.77, "CIDEr": 0.4431},
    "clinical_efficacy": {"labeler": "rule", "micro": {"precision": 0.421, "recall": 0.387, "f1": 0.403},
                          "macro": {"precision": 0.2, "recall": 0.18, "f1": 0.19}},
    "diagnosis": {"micro": {"precision": 0.5, "recall": 0.4, "f1": 0.444}},
}
REMOTE_CODE = {
    "configuration_dia_llama.py": "class DiaLlamaConfig: pass\n",
    "modeling_dia_llama.py": "from .configuration_dia_llama import DiaLlamaConfig\nfrom .volume_io import read\n",
    "processing_dia_llama.py": "from .volume_io import read\n",
    "volume_io.py": "def read(path): return path\n",
}
UPLOADED = sorted(["config.json", "generation_config.json", "model.safetensors", "processor_config.json",
                   "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "metrics.json",
                   "README.md", *REMOTE_CODE])


def make_model_dir(path: Path, *, seed: int = 0, shards: int = 1, metrics: dict | None = METRICS) -> Path:
    """A stand-in `save_pretrained` folder: real safetensors, auto_map config, tokenizer-ish files, remote code."""
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "dia_llama", "architectures": ["DiaLlamaForConditionalGeneration"],
        "auto_map": {"AutoConfig": "configuration_dia_llama.DiaLlamaConfig",
                     "AutoModel": "modeling_dia_llama.DiaLlamaModel",
                     "AutoModelForImageTextToText": "modeling_dia_llama.DiaLlamaForConditionalGeneration"},
        "text_config": {"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 1, "vocab_size": 64,
                        "_name_or_path": "meta-llama/Llama-2-7b-chat-hf"},
        "vision_config": {"volume_size": [32, 32, 8], "patch_size": [8, 8, 4], "hidden_size": 12,
                          "num_hidden_layers": 1, "num_latents": 4, "num_channels": 3},
        "disease_names": ["cardiomegaly", "pleural effusion"], "disease_pooling": "attention",
    }
    files = {
        "config.json": config,
        "generation_config.json": {"max_new_tokens": 300, "do_sample": False},
        "processor_config.json": {"processor_class": "DiaLlamaProcessor",
                                  "auto_map": {"AutoProcessor": "processing_dia_llama.DiaLlamaProcessor"}},
        "tokenizer.json": {"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}},
        "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast"},
        "special_tokens_map.json": {"bos_token": "<s>"},
    }
    if metrics is not None:
        files["metrics.json"] = metrics
    for name, obj in files.items():
        (path / name).write_text(json.dumps(obj, indent=2))
    for name, text in REMOTE_CODE.items():
        (path / name).write_text(text)
    rng = np.random.default_rng(seed)
    tensors = {f"layer{i}.weight": rng.standard_normal((64, 32)).astype(np.float32) for i in range(4)}
    if shards == 1:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        names, weight_map = sorted(tensors), {}
        for k in range(shards):
            shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[k::shards]}
            save_file(part, str(path / shard), metadata={"format": "pt"})
            weight_map.update({n: shard for n in part})
        (path / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": 4 * 64 * 32 * 4}, "weight_map": weight_map}))
    return path


def add_training_clutter(path: Path) -> None:
    """Things a training output folder holds that must not be uploaded (and must not block staging)."""
    for name in ("optimizer.pt", "scheduler.pt", "training_args.bin", "rng_state.pth", "trainer_state.json",
                 "zero_to_fp32.py", "notes.txt", "README.md"):
        (path / name).write_bytes(b"x")
    for sub in ("checkpoint-10", "runs/exp1"):
        (path / sub).mkdir(parents=True)
        (path / sub / "pytorch_model.bin").write_bytes(b"pickle")


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------ staging and card
def test_stage_copies_exactly_the_upload(tmp_path):
    model = make_model_dir(tmp_path / "model")
    add_training_clutter(model)
    out = stage_for_hub(model, tmp_path / "staged", repo_id="me/dia-llama-tiny")
    assert out == (tmp_path / "staged").resolve()
    assert listing(out) == UPLOADED
    for name in UPLOADED:
        if name != "README.md":
            assert (out / name).read_bytes() == (model / name).read_bytes(), name
    with pytest.raises(HubStagingError, match="not empty"):
        stage_for_hub(model, out)

    sharded = make_model_dir(tmp_path / "sharded", shards=2, metrics=None)
    files = listing(stage_for_hub(sharded, tmp_path / "staged2"))
    assert "model.safetensors.index.json" in files and "metrics.json" not in files
    assert [f for f in files if f.endswith(".safetensors")] == [f"model-0000{k}-of-00002.safetensors" for k in (1, 2)]


def test_model_card_has_valid_model_index_from_metrics(tmp_path):
    model = make_model_dir(tmp_path / "model")
    text = (stage_for_hub(model, tmp_path / "staged", repo_id="me/dia-llama-tiny") / "README.md").read_text()
    card = validate_model_card(text)
    data = card.data.to_dict()
    # no built-in task reads a CT volume: `other`, no hosted widget; the card shows the custom pipeline instead
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "other" and data["inference"] is False
    assert 'pipeline(model="me/dia-llama-tiny", trust_remote_code=True)' in text
    assert data["license"] == "apache-2.0" and data["base_model"] == "meta-llama/Llama-2-7b-chat-hf"
    assert {"radiology", "ct", "report-generation", "medical", "dia-llama", "3d"} <= set(data["tags"])
    assert card.data.model_name == "dia-llama-tiny"
    values = {r.metric_name: r.metric_value for r in card.data.eval_results}
    for key in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"):
        assert values[key] == METRICS["nlg"][key]
    assert values["CE-F1 (micro, rule labeler)"] == 0.403
    assert values["CE-P (micro, rule labeler)"] == 0.421
    assert values["Diagnosis f1 (micro)"] == 0.444
    report = [r for r in card.data.eval_results if r.task_type == "image-to-text"]
    assert {(r.dataset_name, r.dataset_split) for r in report} == {("CTRG-Chest-548K", "test")}
    assert "**Not for clinical use.**" in text and "coco_raw" in text and "`rule`" in text
    assert 'AutoModelForImageTextToText.from_pretrained(repo_id, trust_remote_code=True' in text
    assert 'repo_id = "me/dia-llama-tiny"' in text and "MICCAI 2024" in text

    # tolerant of partial / absent metrics; extra metadata merges
    (model / "metrics.json").write_text(json.dumps({"nlg": {"BLEU-4": 12.5}, "clinical_efficacy": {}}))
    card = validate_model_card(render_model_card(model, "me/x", extra_metadata={"tags": ["ctrg"]}))
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == [("BLEU-4", 12.5)]
    assert "ctrg" in card.data.tags
    (model / "metrics.json").unlink()
    card = validate_model_card(render_model_card(model))
    assert not card.data.eval_results and "model-index" not in card.data.to_dict()

    with pytest.raises(ValueError):
        validate_model_card(text.replace("**Not for clinical use.**", ""))
    with pytest.raises(ValueError):
        validate_model_card(text.replace("    - type: bleu\n", "    - typo: bleu\n", 1))


def test_refuses_pickles_and_incomplete_remote_code(tmp_path):
    model = make_model_dir(tmp_path / "model")
    (model / "pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    with pytest.raises(HubStagingError, match="pytorch_model.bin.*safetensors"):
        stage_for_hub(model, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    (model / "pytorch_model.bin").unlink()

    (model / "volume_io.py").unlink()  # imported by modeling/processing
    with pytest.raises(HubStagingError, match="volume_io.py"):
        stage_for_hub(model, tmp_path / "b")
    (model / "volume_io.py").write_text(REMOTE_CODE["volume_io.py"])

    config = json.loads((model / "config.json").read_text())
    config["auto_map"]["AutoModel"] = "modeling_missing.DiaLlamaModel"
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(HubStagingError, match="modeling_missing.py"):
        stage_for_hub(model, tmp_path / "c")
    del config["auto_map"]
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(HubStagingError, match="auto_map"):
        stage_for_hub(model, tmp_path / "d")


def test_dry_run_and_cli(tmp_path, capsys):
    model = make_model_dir(tmp_path / "model")
    assert push_to_hub(model, "me/dia", dry_run_dir=tmp_path / "dry") == (tmp_path / "dry").resolve()
    assert listing(tmp_path / "dry") == UPLOADED
    assert main(["push", str(model), "me/dia", "--private", "--revision", "v2", "--dry-run", str(tmp_path / "dry2"),
                 "--commit-message", "hello"]) == 0
    assert "staged in" in capsys.readouterr().out
    assert listing(tmp_path / "dry2") == UPLOADED


# ------------------------------------------------------------------------------------ against the loopback Hub
PUSH = """
import json
from dia_llama.hub import push_to_hub
urls = [push_to_hub(d, "me/dia-llama-tiny", revision=r, commit_message=m) for d, r, m in {jobs!r}]
print(json.dumps(urls))
"""


def test_push_one_commit_then_download_identical_bytes(hub_server_fixture, tmp_path):
    hub = hub_server_fixture
    model = make_model_dir(tmp_path / "model")
    add_training_clutter(model)
    staged = stage_for_hub(model, tmp_path / "staged", repo_id="me/dia-llama-tiny")
    [url] = run_client_json(PUSH.format(jobs=[(str(model), None, "Add tiny checkpoint")]), hub.endpoint)

    commits = hub.commits("me/dia-llama-tiny")
    assert [c.title for c in commits] == ["initial commit", "Add tiny checkpoint"]
    head = commits[-1]
    assert url.endswith(f"/me/dia-llama-tiny/commit/{head.oid}") and hub.branches("me/dia-llama-tiny") == {
        "main": head.oid}
    assert sorted(head.added) == UPLOADED and sorted(head.files) == sorted(UPLOADED + [".gitattributes"])
    assert head.files["model.safetensors"].lfs and not head.files["config.json"].lfs
    assert head.files["README.md"].content == (staged / "README.md").read_bytes()
    assert not hub.is_private("me/dia-llama-tiny")
    assert any(path.startswith("/__lfs__/upload/") for method, path in hub.requests if method == "PUT")

    got = run_client_json("""
        import hashlib, json, os
        from huggingface_hub import hf_hub_download, snapshot_download, HfApi
        repo = "me/dia-llama-tiny"
        digest = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
        one = {f: digest(hf_hub_download(repo, f)) for f in ("model.safetensors", "config.json", "README.md")}
        snap = snapshot_download(repo)
        every = {f: digest(os.path.join(snap, f)) for f in os.listdir(snap)}
        print(json.dumps({"one": one, "snap": every, "files": HfApi().list_repo_files(repo)}))
    """, hub.endpoint)
    want = {f: hashlib.sha256((staged / f).read_bytes()).hexdigest() for f in UPLOADED}
    assert got["one"] == {f: want[f] for f in got["one"]}
    assert {f: h for f, h in got["snap"].items() if f != ".gitattributes"} == want
    assert sorted(got["files"]) == sorted(UPLOADED + [".gitattributes"])


def test_revision_branch_and_pinned_download(hub_server_fixture, tmp_path):
    hub = hub_server_fixture
    v1 = make_model_dir(tmp_path / "v1", seed=1, shards=2)
    v2 = make_model_dir(tmp_path / "v2", seed=2)
    v3 = make_model_dir(tmp_path / "v3", seed=3)
    jobs = [(str(v1), None, "v1"), (str(v2), None, "v2"), (str(v3), "exp", "v3 on a branch")]
    run_client_json(PUSH.format(jobs=jobs), hub.endpoint)
    repo = "me/dia-llama-tiny"
    first, second, third = hub.commits(repo)[1:]
    assert (first.title, second.title, third.title) == ("v1", "v2", "v3 on a branch")
    assert hub.branches(repo) == {"main": second.oid, "exp": third.oid} and third.parents == [second.oid]
    # v2 (single file) replaced v1's shards and index in the same commit
    assert not any(f.startswith("model-") for f in second.files) and "model.safetensors" in second.files
    assert sorted(second.deleted) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                      "model.safetensors.index.json"]

    got = run_client_json(f"""
        import json
        from huggingface_hub import hf_hub_download, snapshot_download
        repo = "{repo}"
        read = lambda **kw: open(hf_hub_download(repo, **kw), "rb").read().hex()
        out = {{"first": read(filename="model-00001-of-00002.safetensors", revision="{first.oid}"),
                "main": read(filename="model.safetensors"), "exp": read(filename="model.safetensors", revision="exp"),
                "pinned_snapshot": sorted(__import__("os").listdir(snapshot_download(repo, revision="{first.oid}")))}}
        print(json.dumps(out))
    """, hub.endpoint)
    assert bytes.fromhex(got["first"]) == (v1 / "model-00001-of-00002.safetensors").read_bytes()
    assert bytes.fromhex(got["main"]) == (v2 / "model.safetensors").read_bytes()
    assert bytes.fromhex(got["exp"]) == (v3 / "model.safetensors").read_bytes()
    assert "model.safetensors.index.json" in got["pinned_snapshot"]


def test_private_push_in_process(hub_server_fixture, tmp_path):
    hub = hub_server_fixture
    model = make_model_dir(tmp_path / "model", metrics=None)
    with inprocess_client(hub, tmp_path / "cache"):
        url = push_to_hub(model, "me/secret", private=True, token="hf_dummy")
    assert hub.is_private("me/secret") and url.startswith(hub.endpoint)
    assert len(hub.commits("me/secret")) == 2
    assert "Bearer hf_dummy" in hub.authorizations


def test_server_errors_refs_and_tags(hub_server_fixture):
    """The error codes and ref APIs the client (and transformers) rely on."""
    hub = hub_server_fixture
    hub.create_repo("me/refs")
    got = run_client_json("""
        import json
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
        api, repo, out = HfApi(), "me/refs", {}
        sha = api.upload_file(path_or_fileobj=b"{}", path_in_repo="a/config.json", repo_id=repo).oid
        api.create_tag(repo, tag="v1.0", revision=sha)
        for name, call in [("entry", lambda: hf_hub_download(repo, "missing.json")),
                           ("revision", lambda: hf_hub_download(repo, "a/config.json", revision="nope")),
                           ("repo", lambda: api.model_info("me/nothing"))]:
            try:
                call()
            except (EntryNotFoundError, RevisionNotFoundError, RepositoryNotFoundError) as exc:
                out[name] = type(exc).__name__
        refs = api.list_repo_refs(repo)
        out["refs"] = [[b.name for b in refs.branches], [t.name for t in refs.tags]]
        out["tag_sha"] = api.model_info(repo, revision="v1.0").sha == sha
        out["commits"] = [c.title for c in api.list_repo_commits(repo)]
        out["tree"] = sorted(e.path for e in api.list_repo_tree(repo))
        out["exists"] = [api.file_exists(repo, "a/config.json"), api.revision_exists(repo, "nope")]
        print(json.dumps(out))
    """, hub.endpoint)
    assert (got["entry"], got["revision"], got["repo"]) == (
        "RemoteEntryNotFoundError", "RevisionNotFoundError", "RepositoryNotFoundError")
    assert got["refs"] == [["main"], ["v1.0"]] and got["tag_sha"]
    assert got["commits"] == ["Upload a/config.json with huggingface_hub", "initial commit"]
    assert got["tree"] == [".gitattributes", "a"] and got["exists"] == [True, False]


# ------------------------------------------------------------------------------------ real checkpoints through the Hub
def _inputs_and_logits(model_dir, tmp_path, name, seed=0):
    import numpy as np
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    rng = np.random.default_rng(seed)
    batch = processor(volumes=[rng.normal(size=(64, 64, 32)).astype("float32")], reports=["No effusion."],
                      disease_labels=[[0] * 14])
    with torch.no_grad():
        logits = model(**batch).logits
    torch.save(dict(batch), tmp_path / f"{name}_batch.pt")
    torch.save(logits, tmp_path / f"{name}_logits.pt")
    return logits


def test_push_pull_round_trip_with_revision_pinning(hub_server_fixture, tiny_model_dir, tmp_path):
    server = hub_server_fixture
    repo = "org/dia-llama-tiny"
    # v1: the init folder; v2: a different seed, pushed on top
    main(["init", str(tmp_path / "v2"), "--preset", "tiny", "--seed", "1"])
    _inputs_and_logits(tiny_model_dir, tmp_path, "v1")
    _inputs_and_logits(tmp_path / "v2", tmp_path, "v2")

    push = "from dia_llama.hub import push_to_hub; import sys; print(push_to_hub(sys.argv[1], sys.argv[2]))"
    for folder in (tiny_model_dir, tmp_path / "v2"):
        script = push.replace("sys.argv[1]", repr(str(folder))).replace("sys.argv[2]", repr(repo))
        run_client(script, server.endpoint, timeout=300)
    commits = server.commits(repo)
    assert len(commits) >= 2
    v1_sha = commits[-2].oid
    assert {"config.json", "model.safetensors", "modeling_dia_llama.py", "README.md"} <= set(commits[-1].files)

    # pull with the package installed (latest) and pinned to v1
    pull = textwrap.dedent(f"""
        import json, torch
        import dia_llama
        from transformers import AutoModelForImageTextToText
        out = {{}}
        for rev, name in ((None, "v2"), ({v1_sha!r}, "v1")):
            model = AutoModelForImageTextToText.from_pretrained({repo!r}, revision=rev).eval()
            batch = torch.load({str(tmp_path)!r} + f"/{{name}}_batch.pt")
            with torch.no_grad():
                logits = model(**batch).logits
            out[name] = bool(torch.equal(logits, torch.load({str(tmp_path)!r} + f"/{{name}}_logits.pt")))
        print(json.dumps(out))
        """)
    assert run_client_json(pull, server.endpoint, timeout=300) == {"v2": True, "v1": True}

    # pull as remote code where the package cannot be imported, then snapshot_download
    remote = BLOCK_DIA_LLAMA + textwrap.dedent(f"""
        import json, torch
        from huggingface_hub import snapshot_download
        from transformers import AutoModelForImageTextToText, AutoProcessor
        model = AutoModelForImageTextToText.from_pretrained({repo!r}, revision={v1_sha!r},
                                                            trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({repo!r}, revision={v1_sha!r}, trust_remote_code=True)
        batch = torch.load({str(tmp_path)!r} + "/v1_batch.pt")
        with torch.no_grad():
            same = torch.equal(model(**batch).logits, torch.load({str(tmp_path)!r} + "/v1_logits.pt"))
        folder = snapshot_download({repo!r}, revision={v1_sha!r})
        import os
        print(json.dumps({{"same": bool(same), "module": type(model).__module__, "files": sorted(os.listdir(folder))}}))
        """)
    result = run_client_json(remote, server.endpoint, timeout=300)
    assert result["same"] and result["module"].startswith("transformers_modules")
    assert "processing_dia_llama.py" in result["files"] and "volume_io.py" in result["files"]


def test_dry_run_folder_loads_as_remote_code(tiny_model_dir, tmp_path):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    metrics = {"dataset": {"name": "synthetic-chest-ct", "split": "test"},
               "nlg": {"coco_raw": {"mode": "coco_raw", "BLEU-1": 40.5, "BLEU-4": 20.25, "METEOR": 22.0,
                                    "ROUGE-L": 38.0}},
               "clinical_efficacy": {"labeler": "rule", "micro": {"precision": 0.8, "recall": 0.7, "f1": 0.75}}}
    (model_dir / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "staged"
    assert main(["push", str(model_dir), "org/name", "--dry-run", str(out)]) == 0
    readme = (out / "README.md").read_text()
    assert "Not for clinical use" in readme
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from dia_llama.hub import validate_model_card

    card = validate_model_card(readme)
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    values = {r.metric_type if r.metric_name is None else r.metric_name: r.metric_value for r in results}
    assert 40.5 in values.values() and 0.75 in values.values(), values
    config = json.loads((out / "config.json").read_text())
    assert "AutoModelForImageTextToText" in config["auto_map"]
    script = BLOCK_DIA_LLAMA + textwrap.dedent(f"""
        from transformers import AutoModelForImageTextToText, AutoProcessor
        m = AutoModelForImageTextToText.from_pretrained({str(out)!r}, trust_remote_code=True)
        p = AutoProcessor.from_pretrained({str(out)!r}, trust_remote_code=True)
        print("LOADED", type(m).__name__, type(p).__name__)
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "LOADED DiaLlamaForConditionalGeneration DiaLlamaProcessor" in result.stdout, result.stderr[-2000:]


def test_transformers_push_to_hub_then_pipeline_without_the_package(hub_server_fixture, tiny_model_dir, tmp_path):
    """transformers' own `model.push_to_hub` + `processor.push_to_hub` upload the remote code; in a process that
    cannot import dia_llama, `pipeline(model=REPO, trust_remote_code=True)` reports on 2 NIfTI scans with
    batch_size=2, the same as one at a time."""
    from dia_llama.volume_io import write_nifti

    server, repo = hub_server_fixture, "org/dia-llama-pipeline"
    scans = []
    for i in range(2):
        volume = np.random.default_rng(i).integers(-1000, 1000, size=(48, 40, 20)).astype(np.int16)
        write_nifti(tmp_path / f"scan{i}.nii.gz", volume, spacing=(0.8, 0.8, 2.0))
        scans.append(str(tmp_path / f"scan{i}.nii.gz"))
    run_client(f"""
        import dia_llama
        from transformers import AutoModelForImageTextToText, AutoProcessor
        AutoModelForImageTextToText.from_pretrained({str(tiny_model_dir)!r}).push_to_hub({repo!r})
        AutoProcessor.from_pretrained({str(tiny_model_dir)!r}).push_to_hub({repo!r})
        """, server.endpoint, timeout=300)
    files = set(server.files(repo))
    assert {"config.json", "model.safetensors", "processor_config.json", "pipeline_dia_llama.py",
            "modeling_dia_llama.py", "image_processing_dia_llama.py", "volume_io_dicom.py"} <= files

    script = BLOCK_DIA_LLAMA + textwrap.dedent(f"""
        import json
        from transformers import pipeline
        pipe = pipeline(model={repo!r}, trust_remote_code=True)
        batched = pipe({scans!r}, batch_size=2, max_new_tokens=5)
        single = [pipe(scan, max_new_tokens=5) for scan in {scans!r}]
        print(json.dumps({{"task": pipe.task, "module": type(pipe).__module__, "batched": batched,
                          "single": single}}))
        """)
    got = run_client_json(script, server.endpoint, timeout=300)
    assert got["task"] == "ct-report-generation" and got["module"].startswith("transformers_modules")
    assert len(got["batched"]) == 2
    for batched, single in zip(got["batched"], got["single"]):
        assert isinstance(batched["report"], str) and batched["report"] == single["report"]
        assert len(batched["diagnoses"]) == 14
        for name, dx in batched["diagnoses"].items():
            assert dx["present"] == single["diagnoses"][name]["present"]
            assert dx["probability"] == pytest.approx(single["diagnoses"][name]["probability"], abs=1e-5)


def test_push_replaces_top_level_files_and_leaves_sub_folders(hub_server_fixture, tmp_path):
    """A Trainer's `last-checkpoint/` (pushed with hub_strategy="checkpoint") survives a later push of the final
    model; stale top-level weights and JSON go."""
    hub, repo = hub_server_fixture, "me/dia-llama-tiny"
    v1, v2 = make_model_dir(tmp_path / "v1", seed=1, shards=2), make_model_dir(tmp_path / "v2", seed=2)
    run_client_json(PUSH.format(jobs=[(str(v1), None, "v1")]), hub.endpoint)
    run_client(f"""
        from huggingface_hub import HfApi
        api = HfApi()
        for path in ("last-checkpoint/config.json", "last-checkpoint/model.safetensors", "stale.json"):
            api.upload_file(path_or_fileobj=b"{{}}", path_in_repo=path, repo_id={repo!r})
        """, hub.endpoint)
    run_client_json(PUSH.format(jobs=[(str(v2), None, "v2")]), hub.endpoint)
    final = hub.commits(repo)[-1]
    assert sorted(final.deleted) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                     "model.safetensors.index.json", "stale.json"]
    assert {"last-checkpoint/config.json", "last-checkpoint/model.safetensors"} <= set(final.files)
