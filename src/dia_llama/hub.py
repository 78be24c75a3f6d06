"""Publish a Dia-LLaMA checkpoint on the Hugging Face Hub: staging, model card, one-commit push.

`stage_for_hub` copies exactly what gets uploaded (safetensors weights, configs, processor/tokenizer files,
remote-code modules, `metrics.json`, a rendered `README.md`) into a folder; `push_to_hub` stages into a
temporary folder and uploads it as ONE `HfApi.upload_folder` commit (transformers' `model.push_to_hub`
writes its own README and makes one commit per object). The model card comes from
`resources/model_card_template.md`; its `model-index` is filled from the checkpoint's `metrics.json`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CARD_TEMPLATE = Path(__file__).resolve().parent / "resources" / "model_card_template.md"
CONFIG_FILES = ("config.json", "generation_config.json")
PROCESSOR_FILES = (
    "processor_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt",
    "chat_template.jinja", "chat_template.json",
)
EXTRA_FILES = ("metrics.json",)
# Files whose `auto_map` may name remote-code modules.
AUTO_MAP_FILES = ("config.json", "processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Trainer / DeepSpeed state that may sit beside the weights: never uploaded, not an error.
TRAINING_STATE = re.compile(
    r"^(optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt|training_args\.bin|trainer_state\.json|rng_state(_\d+)?\.pth"
    r"|latest|zero_to_fp32\.py)$"
)
TAGS = ["radiology", "ct", "report-generation", "medical", "dia-llama", "3d"]
KNOWN_DATASETS = {"ct-rate": "ibrahimhamamci/CT-RATE"}  # display name (lower case) -> Hub dataset id
NOT_FOR_CLINICAL_USE = "Not for clinical use"
# Remote files a push may replace or delete so the repo mirrors the staged model (never README/others).
PUSH_DELETE_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.py"]

NLG_METRICS = [  # (metrics.json key, model-index metric type, display name)
    ("BLEU-1", "bleu", "BLEU-1"), ("BLEU-2", "bleu", "BLEU-2"), ("BLEU-3", "bleu", "BLEU-3"),
    ("BLEU-4", "bleu", "BLEU-4"), ("METEOR", "meteor", "METEOR"), ("ROUGE-L", "rouge", "ROUGE-L"),
    ("CIDEr", "cider", "CIDEr"),
]
NLG_PROTOCOLS = {
    "coco_raw": "pycocoevalcap 1.2 scorers on the raw strings (no PTB tokenizer, no lower-casing), "
                "one reference per case",
    "coco_ptb": "pycocoevalcap 1.2 scorers after the PTB tokenizer and lower-casing (R2Gen convention)",
}
AVERAGES = ("micro", "macro", "example")


class HubStagingError(ValueError):
    """The model folder cannot be published as it is."""


# ---------------------------------------------------------------------------------------------- staging
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise HubStagingError(f"{path.name} is not valid JSON: {exc}") from exc


def _auto_map_modules(auto_map: Any) -> set[str]:
    """Module files named by an `auto_map` ({"AutoX": "module.Class" | "repo--module.Class" | [slow, fast]})."""
    refs: list[str] = []
    for value in (auto_map or {}).values():
        refs.extend(v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, str))
    return {ref.split("--")[-1].rsplit(".", 1)[0] + ".py" for ref in refs if "." in ref}


def _relative_imports(py_file: Path) -> set[str]:
    text = py_file.read_text(encoding="utf-8")
    mods = re.findall(r"^\s*import\s+\.(\S+)\s*$", text, flags=re.M)
    mods += re.findall(r"^\s*from\s+\.(\S+)\s+import", text, flags=re.M)
    return {m.replace(".", "/") + ".py" for m in mods}


def _remote_code_files(model_dir: Path, config: dict) -> list[str]:
    """Remote-code modules to ship: those named in the auto_maps and the custom pipelines, and their relative imports
    (`save_pretrained` writes them all for the classes `dia_llama/__init__.py` registers for remote code)."""
    needed: dict[str, str] = {}  # file -> who needs it
    for name in AUTO_MAP_FILES:
        if (model_dir / name).is_file():
            data = config if name == "config.json" else _read_json(model_dir / name)
            if isinstance(data, dict):
                for mod in _auto_map_modules(data.get("auto_map")):
                    needed.setdefault(mod, f"the auto_map of {name}")
    for task, info in (config.get("custom_pipelines") or {}).items():
        impl = info.get("impl") if isinstance(info, dict) else None
        if isinstance(impl, str) and "." in impl:
            needed.setdefault(impl.rsplit(".", 1)[0].replace(".", "/") + ".py", f"the {task!r} pipeline of config.json")
    todo, done = list(needed), set()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        path = model_dir / name
        if not path.is_file():
            raise HubStagingError(
                f"{name} is required by {needed[name]} but is missing from {model_dir}; save the model with "
                "`save_pretrained` after `import dia_llama` (which registers the classes for remote code) or copy "
                "the module next to config.json"
            )
        for dep in _relative_imports(path):
            needed.setdefault(dep, f"a relative import in {name}")
            todo.append(dep)
    return sorted(done)


def _check_safetensors(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) == 8:
            (n,) = struct.unpack("<Q", head)
            if 2 <= n <= 100_000_000:
                try:
                    header = json.loads(f.read(n))
                    if isinstance(header, dict):
                        return
                except ValueError:
                    pass
    raise HubStagingError(f"{path.name} is not a valid safetensors file")


def _select_files(model_dir: Path) -> list[str]:
    """Names (top level of `model_dir`) to upload, README excluded. Raises `HubStagingError`."""
    if not model_dir.is_dir():
        raise HubStagingError(f"{model_dir} is not a folder")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise HubStagingError(f"{model_dir} has no config.json (is it a `save_pretrained` folder?)")
    config = _read_json(config_path)
    if not isinstance(config, dict) or not config.get("auto_map"):
        raise HubStagingError(
            "config.json has no `auto_map`: the checkpoint would not load with trust_remote_code. Save it after "
            "`import dia_llama` (which calls `register_for_auto_class`)"
        )
    top = {p.name: p for p in model_dir.iterdir()}
    pickles = sorted(n for n, p in top.items() if p.is_file() and n.lower().endswith(PICKLE_SUFFIXES)
                     and not TRAINING_STATE.match(n))
    if pickles:
        raise HubStagingError(
            f"refusing to publish pickled files {pickles}: weights must be safetensors (save with "
            "`save_pretrained(..., safe_serialization=True)`) and pickles execute code when loaded; "
            "remove or convert them first"
        )
    weights = sorted(n for n, p in top.items() if p.is_file() and n.endswith(".safetensors"))
    index_name = "model.safetensors.index.json"
    indexes = sorted(n for n, p in top.items() if p.is_file() and n.endswith(".safetensors.index.json"))
    for idx in indexes:
        shards = set((_read_json(model_dir / idx).get("weight_map") or {}).values())
        missing = sorted(s for s in shards if s not in top)
        if missing:
            raise HubStagingError(f"{idx} lists shards that are missing: {missing}")
    if "model.safetensors" not in top and index_name not in top:
        raise HubStagingError(f"{model_dir} has no model.safetensors (or {index_name} + shards)")
    for name in weights:
        _check_safetensors(model_dir / name)
    files = [n for n in CONFIG_FILES + PROCESSOR_FILES + EXTRA_FILES if n in top and top[n].is_file()]
    files += weights + indexes + _remote_code_files(model_dir, config)
    skipped = sorted(n for n in top if n not in files and n != "README.md")
    if skipped:
        logger.info("not uploaded (training state, folders or unknown files): %s", skipped)
    return sorted(set(files))


def stage_for_hub(model_dir, out_dir, *, repo_id: str | None = None, card_template=None,
                  license: str = "apache-2.0", extra_metadata: dict | None = None, link_files: bool = False) -> Path:
    """Copy exactly what would be uploaded into `out_dir` (created; must be empty) and render `README.md`.

    Ships config.json (with `auto_map`), generation config, safetensors weights (single file or shards + index),
    processor/tokenizer files, remote-code modules (auto_map + known set + relative imports), `metrics.json`.
    Refuses pickled weights, skips trainer state and sub-folders (checkpoints, runs). `link_files` hard-links
    instead of copying where possible (for short-lived staging). Returns `out_dir`.
    """
    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    if out_dir == model_dir:
        raise HubStagingError("out_dir must differ from model_dir")
    files = _select_files(model_dir)
    card = render_model_card(model_dir, repo_id=repo_id, template_path=card_template, license=license,
                             extra_metadata=extra_metadata)
    validate_model_card(card)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise HubStagingError(f"{out_dir} is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        src, dst = model_dir / name, out_dir / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if link_files:
            try:
                os.link(src, dst)
                continue
            except OSError:
                pass
        shutil.copy2(src, dst)
    (out_dir / "README.md").write_text(card, encoding="utf-8")
    return out_dir


# ---------------------------------------------------------------------------------------------- model card
def _num(value) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "unknown"


def _looks_like_hub_id(value) -> bool:
    return (isinstance(value, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", value) is not None
            and not value.startswith((".", "/")) and not os.path.exists(value))


def _base_model(config: dict) -> str | None:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    for cand in (config.get("base_model"), text.get("base_model"), text.get("_name_or_path")):
        if _looks_like_hub_id(cand):
            return cand
    return None


def _dataset_info(metrics: dict) -> dict:
    ds = metrics.get("dataset") if isinstance(metrics.get("dataset"), dict) else {}
    name = ds.get("name") or ds.get("id") or "evaluation set"
    hub_id = ds.get("id") if _looks_like_hub_id(ds.get("id")) else KNOWN_DATASETS.get(str(name).lower())
    out = {"type": hub_id or _slug(name), "name": str(name)}
    for key in ("config", "split", "revision"):
        if ds.get(key) is not None:
            out[key] = str(ds[key])
    return out


def _averages(block: dict) -> list[tuple[str, dict]]:
    """[(average name, {precision, recall, f1, ...})] found in a CE / diagnosis block."""
    out = []
    for avg in AVERAGES:
        vals = block.get(avg)
        if isinstance(vals, dict):
            vals = {k: _num(vals.get(k)) for k in ("precision", "recall", "f1")}
            if any(v is not None for v in vals.values()):
                out.append((avg, vals))
    return out


def _nlg_block(metrics: dict) -> dict:
    """The NLG scores: `nlg` itself, or (as `dia-llama evaluate` writes it) `nlg[mode]`, `coco_raw` first."""
    nlg = metrics.get("nlg") if isinstance(metrics.get("nlg"), dict) else {}
    if "BLEU-1" not in nlg:
        by_mode = {k: v for k, v in nlg.items() if isinstance(v, dict) and "BLEU-1" in v}
        if by_mode:
            mode = "coco_raw" if "coco_raw" in by_mode else next(iter(by_mode))
            return {"mode": mode, **by_mode[mode]}
    return nlg


def build_model_index(metrics: dict | None, model_name: str) -> list[dict] | None:
    """`model-index` from a metrics.json dict (None when it holds no usable number)."""
    if not isinstance(metrics, dict):
        return None
    dataset = _dataset_info(metrics)
    results = []
    nlg = _nlg_block(metrics)
    ce = metrics.get("clinical_efficacy") if isinstance(metrics.get("clinical_efficacy"), dict) else {}
    report_metrics = []
    for key, mtype, name in NLG_METRICS:
        if _num(nlg.get(key)) is not None:
            m = {"type": mtype, "name": name, "value": nlg[key]}
            if nlg.get("mode"):
                m["args"] = {"protocol": str(nlg["mode"])}
            report_metrics.append(m)
    labeler = str(ce.get("labeler") or "unspecified")
    for avg, vals in _averages(ce):
        for key, label in (("precision", "P"), ("recall", "R"), ("f1", "F1")):
            if vals[key] is not None:
                report_metrics.append({"type": key, "name": f"CE-{label} ({avg}, {labeler} labeler)",
                                       "value": vals[key], "args": {"labeler": labeler, "average": avg}})
    if report_metrics:
        results.append({"task": {"type": "image-to-text", "name": "Radiology report generation"},
                        "dataset": dict(dataset), "metrics": report_metrics})
    dx = metrics.get("diagnosis") if isinstance(metrics.get("diagnosis"), dict) else {}
    dx_metrics = [{"type": key, "name": f"Diagnosis {key} ({avg})", "value": vals[key], "args": {"average": avg}}
                  for avg, vals in _averages(dx) for key in ("precision", "recall", "f1") if vals[key] is not None]
    if dx_metrics:
        results.append({"task": {"type": "image-classification", "name": "Multi-label disease diagnosis"},
                        "dataset": dict(dataset), "metrics": dx_metrics})
    return [{"name": model_name, "results": results}] if results else None


def _evaluation_section(metrics: dict | None) -> str:
    if not isinstance(metrics, dict):
        return ("No `metrics.json` was published with this checkpoint. Evaluate it with "
                "`python -m dia_llama.evaluate` before drawing any conclusion.")
    ds = _dataset_info(metrics)
    lines = [f"Dataset: **{ds['name']}**" + (f", split `{ds['split']}`" if "split" in ds else "") + "."]
    nlg = _nlg_block(metrics)
    row = [(name, nlg[key]) for key, _, name in NLG_METRICS if _num(nlg.get(key)) is not None]
    if row:
        mode = nlg.get("mode")
        protocol = (f"protocol `{mode}`" + (f", {NLG_PROTOCOLS[mode]}" if mode in NLG_PROTOCOLS else "")
                    if mode else "protocol not recorded")
        lines += ["", f"Language metrics ({protocol}):",
                  "", "| " + " | ".join(n for n, _ in row) + " |", "|" + " --- |" * len(row),
                  "| " + " | ".join(_fmt(v) for _, v in row) + " |"]
    for title, block, what in (("Clinical efficacy", metrics.get("clinical_efficacy"),
                                "findings extracted from the generated and the reference reports by the same "
                                "labeler, compared per disease"),
                               ("Diagnosis", metrics.get("diagnosis"),
                                "the disease branch's own predictions against the reference labels")):
        if not isinstance(block, dict) or not _averages(block):
            continue
        labeler = block.get("labeler")
        what += f" (labeler: `{labeler}`)" if labeler else (" (labeler not recorded)" if title[0] == "C" else "")
        lines += ["", f"{title}: {what}.", "", "| averaging | precision | recall | F1 |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {avg} | " + " | ".join("–" if v[k] is None else _fmt(v[k]) for k in ("precision", "recall", "f1"))
                  + " |" for avg, v in _averages(block)]
    if len(lines) == 1:
        lines.append("`metrics.json` holds no recognised metric.")
    return "\n".join(lines)


def _model_details(config: dict, base_model: str | None) -> str:
    vision = config.get("vision_config") if isinstance(config.get("vision_config"), dict) else {}
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    diseases = config.get("disease_names")

    def join(*parts):
        return ", ".join(p for p in parts if p)

    def dims(key):
        return "×".join(str(v) for v in vision[key]) if isinstance(vision.get(key), list) else ""

    rows = []
    if vision:
        size = dims("volume_size")
        rows.append("- Vision tower: " + join(
            "ViT3D",
            f"input {vision.get('num_channels', 3)}×{size} (C×H×W×D)" if size else "",
            f"patch {dims('patch_size')}" if dims("patch_size") else "",
            "convolutional patch embedding (Conv3d-BatchNorm-GELU, widths "
            + "→".join(str(c) for c in vision.get("conv_stem_channels", [])) + ")"
            if vision.get("patch_embedding") == "conv" else "",
            "blob features (LoG σ " + "; ".join("×".join(f"{v:g}" for v in sigma)
                                                for sigma in vision["blob_filter_sigmas"]) + ")"
            if vision.get("blob_filter_sigmas") else "",
            f"width {vision['hidden_size']}" if "hidden_size" in vision else "",
            f"{vision['num_hidden_layers']} layers" if "num_hidden_layers" in vision else "",
            f"perceiver resampler to {vision['num_latents']} visual tokens" if "num_latents" in vision else ""))
    if text or base_model:
        rows.append("- Language model: " + join(
            text.get("model_type", "causal LM"),
            f"hidden size {text['hidden_size']}" if "hidden_size" in text else "",
            f"{text['num_hidden_layers']} layers" if "num_hidden_layers" in text else "",
            f"vocabulary {text['vocab_size']}" if "vocab_size" in text else "",
            f"from `{base_model}`" if base_model else ""))
    if isinstance(diseases, list):
        rows.append(f"- Diseases ({len(diseases)}): " + ", ".join(diseases))
    switches = [f"{k}=`{config[k]}`" for k in ("disease_pooling", "disease_attention", "disease_max_pooling",
                                                 "disease_attention_min_intensity", "diagnosis_head", "prompt_type")
                if k in config]
    if switches:
        rows.append("- Disease branch: " + ", ".join(switches))
    return "\n".join(rows) or "- See `config.json`."


def _render_template(template: str, context: dict[str, str]) -> str:
    def sub(m):
        if m.group(1) not in context:
            raise ValueError(f"model card template: unknown placeholder {{{{ {m.group(1)} }}}}")
        return str(context[m.group(1)])
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", sub, template)


def render_card_from_dicts(config: dict | None, metrics: dict | None, *, repo_id: str | None = None,
                           model_name: str | None = None, template_path=None, license: str = "apache-2.0",
                           extra_metadata: dict | None = None, evaluation: str | None = None) -> str:
    """Render the model card from a config dict and a metrics dict (either may be None)."""
    import yaml

    config = config or {}
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else "dia-llama")
    base_model = _base_model(config)
    meta: dict[str, Any] = {"license": license, "library_name": "transformers", "pipeline_tag": "image-text-to-text",
                            "tags": list(TAGS)}
    dataset = _dataset_info(metrics) if isinstance(metrics, dict) and metrics.get("dataset") else None
    if dataset and _looks_like_hub_id(dataset["type"]):
        meta["datasets"] = [dataset["type"]]
    if base_model:
        meta["base_model"] = base_model
    model_index = build_model_index(metrics, model_name)
    if model_index:
        meta["model-index"] = model_index
    for key, value in (extra_metadata or {}).items():
        if key == "tags":
            meta["tags"] += [t for t in value if t not in meta["tags"]]
        else:
            meta[key] = value
    if "model-index" in meta and not meta["model-index"]:
        del meta["model-index"]
    datasets = meta.get("datasets") or []
    training = ("Datasets: " + ", ".join(f"`{d}`" for d in datasets) + ". ") if datasets else ""
    template = Path(template_path or CARD_TEMPLATE).read_text(encoding="utf-8")
    return _render_template(template, {
        "metadata": yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip("\n"),
        "model_name": model_name,
        "repo_id": repo_id or "<namespace>/<model-name>",
        "model_details": _model_details(config, base_model),
        "training_data": training,
        "evaluation": evaluation if evaluation is not None else _evaluation_section(metrics),
        "license": license,
    })


def render_model_card(model_dir, repo_id: str | None = None, template_path=None, *, license: str = "apache-2.0",
                      extra_metadata: dict | None = None) -> str:
    """Model card (README.md text) for the checkpoint in `model_dir` (its config.json and metrics.json)."""
    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json") if (model_dir / "config.json").is_file() else {}
    metrics = _read_json(model_dir / "metrics.json") if (model_dir / "metrics.json").is_file() else None
    return render_card_from_dicts(config if isinstance(config, dict) else {}, metrics, repo_id=repo_id,
                                  model_name=repo_id.split("/")[-1] if repo_id else model_dir.resolve().name,
                                  template_path=template_path, license=license, extra_metadata=extra_metadata)


def validate_model_card(text: str):
    """Parse `text` like the Hub does; raise `ValueError` on an invalid card. Returns the `ModelCard`.

    Checks: YAML front matter is a mapping with license / library_name / pipeline_tag, a `model-index` (if any)
    that `huggingface_hub` parses into eval results with numeric values, and the not-for-clinical-use statement.
    """
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    if not re.match(r"^---\r?\n.*?\r?\n---\r?\n", text, re.S):
        raise ValueError("model card has no YAML front matter")
    card = ModelCard(text, ignore_metadata_errors=False)  # raises ValueError on an unparsable model-index
    data = card.data.to_dict()
    for key in ("license", "library_name", "pipeline_tag"):
        if not data.get(key):
            raise ValueError(f"model card metadata lacks {key!r}")
    index = data.get("model-index")
    if index is not None:
        try:
            _, results = model_index_to_eval_results(index)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid model-index: {type(exc).__name__}: {exc}") from exc
        bad = [r.metric_name or r.metric_type for r in results if _num(r.metric_value) is None]
        if not results or bad:
            raise ValueError(f"model-index has no or non-numeric metric values: {bad}")
    if NOT_FOR_CLINICAL_USE.lower() not in card.text.lower():
        raise ValueError(f"model card must state '{NOT_FOR_CLINICAL_USE}'")
    return card


# ---------------------------------------------------------------------------------------------- push
def push_to_hub(model_dir, repo_id: str, *, private: bool = False, revision: str | None = None,
                commit_message: str | None = None, token: str | None = None, dry_run_dir=None) -> str | Path:
    """Stage `model_dir` and upload it to `repo_id` as one commit; returns the commit URL.

    With `dry_run_dir`, only stage there and return that folder (nothing touches the network). The repo is
    created if needed (`private` applies only to a new repo); a `revision` branch is created from `main` if
    missing. Remote weights/JSON/.py files absent from the staged folder are deleted in the same commit so the
    revision mirrors the checkpoint. `token=None` lets huggingface_hub find one (HF_TOKEN, `hf auth login`).
    """
    if dry_run_dir is not None:
        return stage_for_hub(model_dir, dry_run_dir, repo_id=repo_id)
    if revision is not None and re.fullmatch(r"[0-9a-f]{40}", revision):
        raise ValueError("revision must be a branch name, not a commit sha")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="dia-llama-push-") as tmp:
        staged = stage_for_hub(model_dir, Path(tmp) / "staged", repo_id=repo_id, link_files=True)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=staged, revision=revision, delete_patterns=PUSH_DELETE_PATTERNS,
            commit_message=commit_message or f"Upload Dia-LLaMA checkpoint {Path(model_dir).resolve().name}",
        )
    return info.commit_url


__all__ = ["stage_for_hub", "push_to_hub", "render_model_card", "render_card_from_dicts", "build_model_index",
           "validate_model_card", "HubStagingError"]
