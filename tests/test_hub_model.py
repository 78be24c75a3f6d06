"""A real Dia-LLaMA checkpoint through the loopback Hub: push → from_pretrained (package and remote code) →
snapshot_download, logits identical, revision pinning honoured; the dry-run folder loads without the package."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch

from dia_llama.cli import main
from hub_server import hub_server_fixture, run_client, run_client_json  # noqa: F401 (fixture)

BLOCK_PACKAGE = """
import builtins
_real_import = builtins.__import__
def _guarded(name, *args, **kwargs):
    if name == "dia_llama" or name.startswith("dia_llama."):
        raise ImportError("dia_llama is blocked in this process")
    return _real_import(name, *args, **kwargs)
builtins.__import__ = _guarded
"""


def _inputs_and_logits(model_dir, tmp_path, name, seed=0):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import numpy as np

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


def test_push_pull_round_trip_with_revision_pinning(hub_server_fixture, tiny_model_dir, tmp_path):  # noqa: F811
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
    remote = BLOCK_PACKAGE + textwrap.dedent(f"""
        import json, torch
        from huggingface_hub import snapshot_download
        from transformers import AutoModelForImageTextToText, AutoProcessor
        model = AutoModelForImageTextToText.from_pretrained({repo!r}, revision={v1_sha!r}, trust_remote_code=True).eval()
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
               "nlg": {"coco_raw": {"mode": "coco_raw", "BLEU-1": 40.5, "BLEU-4": 20.25, "METEOR": 22.0, "ROUGE-L": 38.0}},
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
    script = BLOCK_PACKAGE + textwrap.dedent(f"""
        from transformers import AutoModelForImageTextToText, AutoProcessor
        m = AutoModelForImageTextToText.from_pretrained({str(out)!r}, trust_remote_code=True)
        p = AutoProcessor.from_pretrained({str(out)!r}, trust_remote_code=True)
        print("LOADED", type(m).__name__, type(p).__name__)
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "LOADED DiaLlamaForConditionalGeneration DiaLlamaProcessor" in result.stdout, result.stderr[-2000:]
