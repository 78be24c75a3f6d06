"""Model cards of Dia-LLaMA checkpoints, with huggingface_hub's `ModelCard`, `ModelCardData` and `EvalResult`.

One template is the source of every card: `resources/model_card.md` (a Jinja2 template that
`ModelCard.from_template` renders; the repository's root `model_card.md` is a link to it). Its front matter is
`ModelCardData` (license, `library_name`, `pipeline_tag: other` with `inference: false` — the `ct-report-generation`
pipeline is custom code the Hub's widgets cannot run, and no built-in task reads a CT volume — tags, base model,
datasets) and a `model-index` built by huggingface_hub from `EvalResult`s of the checkpoint's `metrics.json`.
A trained folder's `training.json` (written by `dia-llama train`) fills the training section: the data set's public
name (a Hub id where one is known) and the recipe, never a local path.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

CARD_TEMPLATE = Path(__file__).resolve().parent / "resources" / "model_card.md"
TAGS = ["radiology", "ct", "3d", "medical", "report-generation", "ct-report-generation", "dia-llama"]
PIPELINE_TAG = "other"  # no built-in task takes a 3D CT; the custom pipeline is declared in config.json
KNOWN_DATASETS = {"ct-rate": "ibrahimhamamci/CT-RATE"}  # display name (lower case) -> Hub dataset id
NOT_FOR_CLINICAL_USE = "Not for clinical use"
TRAINING_FILE = "training.json"

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
REPORT_TASK = ("image-to-text", "Radiology report generation")
DIAGNOSIS_TASK = ("image-classification", "Multi-label disease diagnosis")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


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


# ---------------------------------------------------------------------------------------------- data set names
def dataset_card_name(data, data_format: str | None = None) -> dict:
    """The public description of a data set for cards and metrics: {"name": display name, "id": Hub id or None}.

    Never a local path: CT-RATE and CTRG-Chest-548K layouts get their published names (CT-RATE its Hub id), the
    synthetic benchmark (a `benchmark.json` beside its manifest) its own, an `hf://datasets/<id>` path or a Hub id
    the id; any other local data set is "a local manifest" (pass a name yourself, e.g. `--dataset_name`).
    """
    text = str(data)
    match = re.match(r"^hf://datasets/([\w.-]+/[\w.-]+)", text)
    if match:
        return {"name": match.group(1), "id": match.group(1)}
    if _looks_like_hub_id(text):
        return {"name": text, "id": text}
    fmt = data_format if data_format not in (None, "auto") else None
    if fmt is None:
        try:
            from .data.datasets import detect_format

            fmt = detect_format(text) if "://" not in text else None
        except ValueError:
            fmt = None
    if fmt == "ctrate":
        return {"name": "CT-RATE", "id": KNOWN_DATASETS["ct-rate"]}
    if fmt == "ctrg":
        return {"name": "CTRG-Chest-548K", "id": None}
    folder = Path(text) if Path(text).is_dir() else Path(text).parent
    if (folder / "benchmark.json").is_file():
        return {"name": "dia-llama synthetic chest-CT benchmark", "id": None}
    return {"name": "a local manifest data set", "id": None}


# ---------------------------------------------------------------------------------------------- metrics → EvalResult
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


def eval_results(metrics: dict | None) -> list:
    """huggingface_hub `EvalResult`s from a metrics.json dict: the NLG scores (with their protocol), the clinical
    efficacy (with its labeler and averaging) and the disease branch's diagnoses. [] when it holds no number."""
    from huggingface_hub import EvalResult

    if not isinstance(metrics, dict):
        return []
    ds = _dataset_info(metrics)
    dataset = {"dataset_type": ds["type"], "dataset_name": ds["name"], "dataset_split": ds.get("split"),
               "dataset_config": ds.get("config"), "dataset_revision": ds.get("revision")}
    report = {"task_type": REPORT_TASK[0], "task_name": REPORT_TASK[1], **dataset}
    results = []
    nlg = _nlg_block(metrics)
    for key, mtype, name in NLG_METRICS:
        if _num(nlg.get(key)) is not None:
            results.append(EvalResult(**report, metric_type=mtype, metric_name=name, metric_value=nlg[key],
                                      metric_args={"protocol": str(nlg["mode"])} if nlg.get("mode") else None))
    ce = metrics.get("clinical_efficacy") if isinstance(metrics.get("clinical_efficacy"), dict) else {}
    labeler = str(ce.get("labeler") or "unspecified")
    for avg, vals in _averages(ce):
        for key, label in (("precision", "P"), ("recall", "R"), ("f1", "F1")):
            if vals[key] is not None:
                results.append(EvalResult(**report, metric_type=key, metric_value=vals[key],
                                          metric_name=f"CE-{label} ({avg}, {labeler} labeler)",
                                          metric_args={"labeler": labeler, "average": avg}))
    dx = metrics.get("diagnosis") if isinstance(metrics.get("diagnosis"), dict) else {}
    for avg, vals in _averages(dx):
        for key in ("precision", "recall", "f1"):
            if vals[key] is not None:
                results.append(EvalResult(task_type=DIAGNOSIS_TASK[0], task_name=DIAGNOSIS_TASK[1], **dataset,
                                          metric_type=key, metric_name=f"Diagnosis {key} ({avg})",
                                          metric_value=vals[key], metric_args={"average": avg}))
    return results


def build_model_index(metrics: dict | None, model_name: str) -> list[dict] | None:
    """The `model-index` of a metrics.json dict, as huggingface_hub writes it (None when it holds no number)."""
    from huggingface_hub.repocard_data import eval_results_to_model_index

    results = eval_results(metrics)
    return eval_results_to_model_index(model_name, results) if results else None


# ---------------------------------------------------------------------------------------------- card sections
def _training_section(training: dict | None, datasets: list[str]) -> str:
    """Training data and recipe of a trained checkpoint (from its training.json); the reference recipe otherwise."""
    reference = ("The reference recipe follows the paper: CTRG-Chest-548K (1,804 chest CT volumes with reports, split "
                 "1,262 / 180 / 362), volumes resized to 3×256×256×64 with min-max intensity scaling, disease labels "
                 "from CheXbert on the reports, LoRA on the frozen language model.")
    if not isinstance(training, dict) or not isinstance(training.get("dataset"), dict):
        listed = ("Datasets: " + ", ".join(f"`{d}`" for d in datasets) + ". ") if datasets else ""
        return listed + reference + (" Other checkpoints of this family may be trained on CT-RATE or synthetic "
                                     "data; the dataset of the evaluation below is recorded in `metrics.json`.")
    ds = training["dataset"]
    name = f"[{ds['name']}](https://huggingface.co/datasets/{ds['id']})" if ds.get("id") else f"**{ds['name']}**"
    counts = ", ".join(f"{n:,} {split}" for split, n in (ds.get("split_counts") or {}).items())
    lines = [f"Trained on {name}" + (f" ({counts} cases)" if counts else "") + "."]
    recipe = training.get("recipe") if isinstance(training.get("recipe"), dict) else {}
    if recipe:
        lines += ["", "| setting | value |", "| --- | --- |"]
        lines += [f"| {key} | {_fmt(value) if not isinstance(value, (list, dict)) else json.dumps(value)} |"
                  for key, value in recipe.items()]
    return "\n".join(lines)


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
                                                 "disease_attention_min_intensity",
                                                 "diagnosis_head", "prompt_type") if k in config]
    if switches:
        rows.append("- Disease branch: " + ", ".join(switches))
    return "\n".join(rows) or "- See `config.json`."


# ---------------------------------------------------------------------------------------------- rendering
def card_data(config: dict | None, metrics: dict | None, *, model_name: str, license: str = "apache-2.0",
              training: dict | None = None, extra_metadata: dict | None = None):
    """The card's front matter as a `ModelCardData`."""
    from huggingface_hub import ModelCardData

    config = config or {}
    trained_on = (training or {}).get("dataset") if isinstance(training, dict) else None
    candidates = [trained_on.get("id") if isinstance(trained_on, dict) else None,
                  _dataset_info(metrics)["type"] if isinstance(metrics, dict) and metrics.get("dataset") else None]
    datasets = list(dict.fromkeys(c for c in candidates if _looks_like_hub_id(c)))
    extra = dict(extra_metadata or {})
    tags = list(TAGS) + [t for t in extra.pop("tags", []) if t not in TAGS]
    fields = {"license": license, "library_name": "transformers", "pipeline_tag": PIPELINE_TAG, "tags": tags,
              "base_model": _base_model(config), "datasets": datasets or None, "model_name": model_name,
              "eval_results": eval_results(metrics) or None, "inference": False}
    fields.update(extra)
    return ModelCardData(**{k: v for k, v in fields.items() if v is not None})


def render_card_from_dicts(config: dict | None, metrics: dict | None, *, repo_id: str | None = None,
                           model_name: str | None = None, template_path=None, license: str = "apache-2.0",
                           extra_metadata: dict | None = None, evaluation: str | None = None,
                           training: dict | None = None) -> str:
    """The model card (README.md text) from a config dict, a metrics dict and a training summary (any may be None),
    rendered from the template by `ModelCard.from_template`."""
    from huggingface_hub import ModelCard

    config = config or {}
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else "dia-llama")
    data = card_data(config, metrics, model_name=model_name, license=license, training=training,
                     extra_metadata=extra_metadata)
    card = ModelCard.from_template(
        data, template_path=str(template_path or CARD_TEMPLATE), model_name=model_name,
        repo_id=repo_id or "<namespace>/<model-name>", model_details=_model_details(config, data.base_model),
        training_data=_training_section(training, data.datasets or []),
        evaluation=evaluation if evaluation is not None else _evaluation_section(metrics), license=license)
    return str(card)


def render_model_card(model_dir, repo_id: str | None = None, template_path=None, *, license: str = "apache-2.0",
                      extra_metadata: dict | None = None) -> str:
    """Model card for the checkpoint in `model_dir` (its config.json, metrics.json and training.json)."""
    model_dir = Path(model_dir)
    found = {name: _read_json(model_dir / name) if (model_dir / name).is_file() else None
             for name in ("config.json", "metrics.json", TRAINING_FILE)}
    config = found["config.json"] if isinstance(found["config.json"], dict) else {}
    return render_card_from_dicts(config, found["metrics.json"], repo_id=repo_id,
                                  model_name=repo_id.split("/")[-1] if repo_id else model_dir.resolve().name,
                                  template_path=template_path, license=license, extra_metadata=extra_metadata,
                                  training=found[TRAINING_FILE])


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


__all__ = ["CARD_TEMPLATE", "TRAINING_FILE", "build_model_index", "card_data", "dataset_card_name", "eval_results",
           "render_card_from_dicts", "render_model_card", "validate_model_card"]
