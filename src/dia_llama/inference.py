"""Inference: load a model for inference, and generate reports for many scans, streamed as JSON lines.

    dia-llama generate MODEL scan.nii.gz series_folder/ "scans/*.nii.gz" manifest.csv --output reports.jsonl

`stream_records` is the one generation loop of the package (`dia-llama generate` and `dia-llama evaluate` use it):
it loads each case on its own (a bad scan becomes an error record, the run goes on), generates in batches, appends
one JSON line per case as it finishes and skips cases already in the output file, so an interrupted run resumes.
"""

from __future__ import annotations

import csv
import glob
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".npy", ".npz", ".dcm")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
MANIFEST_SCAN_COLUMNS = ("volume", "scan", "path", "image")

_DIAGNOSIS = {
    "type": "object",
    "required": ["disease", "probability", "present"],
    "additionalProperties": False,
    "properties": {
        "disease": {"type": "string"},
        "probability": {"type": "number", "minimum": 0, "maximum": 1},
        "present": {"type": "boolean"},
    },
}
# JSON schema of one `dia-llama generate` record (one JSON object per line): a report, or an error.
RECORD_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dia-llama generate record",
    "oneOf": [
        {
            "type": "object",
            "required": ["scan", "report", "diagnoses", "model"],
            "additionalProperties": False,
            "properties": {
                "scan": {"type": "string", "description": "the scan as given (or as expanded from a folder/glob)"},
                "report": {"type": "string", "description": "the generated findings"},
                "model": {"type": "string"},
                "diagnoses": {"type": "array", "items": _DIAGNOSIS},
            },
        },
        {
            "type": "object",
            "required": ["scan", "error", "model"],
            "additionalProperties": False,
            "properties": {
                "scan": {"type": "string"},
                "error": {"type": "string", "minLength": 1, "description": "why no report was written"},
                "model": {"type": "string"},
            },
        },
    ],
}


# ---------------------------------------------------------------------------------------------------------------------
# Loading


def load_for_inference(model: str, revision: str | None = None, device: str = "cpu", dtype: str | None = None,
                       device_map: str | None = None, trust_remote_code: bool = False, load_in_4bit: bool = False,
                       load_in_8bit: bool = False):
    """Model + processor from a local folder or a Hub id, for inference: `dtype` ("float32", "bfloat16",
    "float16", "auto"), `device` or `device_map` ("auto" spreads it over the devices with accelerate), and 4/8-bit
    weights of the language model (bitsandbytes, CUDA only)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import dia_llama  # noqa: F401  (registers the Auto classes)

    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if dtype:
        kwargs["dtype"] = "auto" if dtype == "auto" else getattr(torch, dtype)
    if load_in_4bit or load_in_8bit:
        kwargs["quantization_config"] = quantization_config(load_in_4bit, load_in_8bit)
        device_map = device_map or "auto"
    if device_map:
        kwargs["device_map"] = device_map
    _check_memory_for(model, kwargs.get("dtype"), quantized=bool(load_in_4bit or load_in_8bit), device_map=device_map)
    try:
        net = AutoModelForImageTextToText.from_pretrained(model, **kwargs).eval()
    except (OSError, ValueError) as err:
        if Path(model).expanduser().exists():
            raise
        raise ValueError(f"{model}: no model folder of that name here, and not loadable from the Hub "
                         f"({' '.join(str(err).split())})") from err
    if not device_map:
        net = net.to(device)
    processor = AutoProcessor.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
    return net, processor


def _check_memory_for(model: str, dtype, quantized: bool, device_map) -> None:
    """Refuse, before loading, a local model folder whose weights need more memory than is free (the weights' bytes
    on disk, scaled to the requested dtype). Hub ids and device maps that place weights on GPUs are not checked."""
    import json

    from .presets import check_memory

    folder = Path(model)
    if quantized or not folder.is_dir() or (device_map and device_map != "cpu"):
        return
    stored = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    if not stored:
        return
    config = folder / "config.json"
    saved = json.loads(config.read_text()).get("dtype") if config.is_file() else None
    width = {"float32": 4, "bfloat16": 2, "float16": 2}
    target = "float32" if dtype is None else (saved if dtype == "auto" else str(dtype).removeprefix("torch."))
    scale = width.get(target or "float32", 4) / width.get(saved or "float32", 4)
    check_memory(stored * scale * 1.1, f"loading {model} ({target or 'float32'})")


# Modules that stay in full precision under 4/8-bit loading: everything but the language model. Full names from the
# root (transformers matches a pattern from the start of a module's name, or as its suffix: a bare "vision_tower"
# would match neither "model.vision_tower.layers.0.attn.qkv" nor its siblings, and the tower would be quantized).
QUANTIZATION_SKIP_MODULES = ["model.vision_tower", "model.resampler", "model.multi_modal_projector",
                             "model.disease_branch", "lm_head"]


def check_quantization_available() -> None:
    """ValueError saying why 4-/8-bit loading cannot run here (no CUDA device, or no bitsandbytes)."""
    if not torch.cuda.is_available():
        raise ValueError("4-/8-bit loading uses bitsandbytes, which needs a CUDA GPU; none is available here. "
                         "Use --dtype bfloat16 or float16 to halve memory instead")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("4-/8-bit loading needs bitsandbytes: pip install 'dia-llama[quantization]'")


def quantization_config(load_in_4bit: bool = False, load_in_8bit: bool = False, check: bool = True):
    """A bitsandbytes config quantizing the language model's linear layers only: the vision tower, resampler,
    projector, disease branch and LM head stay in full precision (`QUANTIZATION_SKIP_MODULES`). 4-bit: NF4 with
    double quantization, bfloat16 compute. Raises ValueError where it cannot run (`check=False` skips that check,
    to inspect the config on a machine without CUDA)."""
    if load_in_4bit and load_in_8bit:
        raise ValueError("choose one of --load-in-4bit and --load-in-8bit")
    if not (load_in_4bit or load_in_8bit):
        raise ValueError("quantization_config needs load_in_4bit or load_in_8bit")
    if check:
        check_quantization_available()
    from transformers import BitsAndBytesConfig

    skip = list(QUANTIZATION_SKIP_MODULES)
    if load_in_4bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def load_pipeline(model: str, revision: str | None = None, device: str = "cpu", dtype: str | None = None,
                  device_map: str | None = None, trust_remote_code: bool = False, load_in_4bit: bool = False,
                  load_in_8bit: bool = False):
    """The `ct-report-generation` pipeline over a model loaded by `load_for_inference` (so with `dtype`,
    `device_map="auto"` and 4/8-bit weights): `load_pipeline(REPO, load_in_4bit=True)(scans, batch_size=4)`.
    Without the package, transformers' own `pipeline(model=REPO, trust_remote_code=True, device_map="auto",
    model_kwargs={"quantization_config": ...})` does the same."""
    from .pipeline_dia_llama import PIPELINE_TASK, CTReportGenerationPipeline

    net, processor = load_for_inference(model, revision=revision, device=device, dtype=dtype, device_map=device_map,
                                        trust_remote_code=trust_remote_code, load_in_4bit=load_in_4bit,
                                        load_in_8bit=load_in_8bit)
    return CTReportGenerationPipeline(model=net, processor=processor, task=PIPELINE_TASK)


# ---------------------------------------------------------------------------------------------------------------------
# Which scans: files, series folders, folders of scans, globs, manifests


@dataclass(frozen=True)
class ScanSource:
    """One scan to report on: `scan` names it in the records; `path` is what the reader opens (None: `error`)."""

    scan: str
    path: str | None = None
    error: str | None = None


def _is_volume_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in VOLUME_SUFFIXES)


def _folder_sources(folder: Path) -> list[ScanSource]:
    """A folder of volume files (and/or series subfolders) → one source each; any other folder is one series."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    volumes = [p for p in entries if p.is_file() and _is_volume_file(p) and not p.name.lower().endswith(".dcm")]
    subfolders = [p for p in entries if p.is_dir()]
    loose = [p for p in entries if p.is_file() and p not in volumes]
    if volumes or (subfolders and not loose):
        return [ScanSource(str(p), str(p)) for p in volumes + subfolders]
    return [ScanSource(str(folder), str(folder))]  # a DICOM series or a folder of slices


def _manifest_sources(path: Path) -> list[ScanSource]:
    """Rows of a CSV/TSV/JSONL/JSON manifest with a `volume` (or `scan`/`path`/`image`) column; relative paths are
    read from the manifest's folder."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".json") and not text.lstrip().startswith("["):
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    elif path.suffix.lower() == ".json":
        rows = json.loads(text)
    else:
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    if not rows or not isinstance(rows[0], dict):
        raise ValueError(f"{path}: no rows in the manifest")
    column = next((c for c in MANIFEST_SCAN_COLUMNS if c in rows[0]), None)
    if column is None:
        raise ValueError(f"{path}: a scan manifest needs one of the columns {list(MANIFEST_SCAN_COLUMNS)}; "
                         f"it has {sorted(rows[0])}")
    out = []
    for number, row in enumerate(rows, start=1):
        value = str(row.get(column) or "").strip()
        if not value:
            out.append(ScanSource(f"{path}:{number}", error=f"{path}: row {number} has an empty {column!r}"))
            continue
        scan = Path(value).expanduser()
        scan = scan if scan.is_absolute() else path.parent / scan
        out.append(ScanSource(str(row.get("id") or scan), str(scan)))
    return out


def expand_scan_sources(items: Iterable[str]) -> list[ScanSource]:
    """What `dia-llama generate` reports on: scan files, series folders, folders of scans, glob patterns and
    CSV/JSONL manifests, in the order given. Inputs that name nothing become error sources (reported, not fatal)."""
    sources: list[ScanSource] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            sources += _folder_sources(path)
        elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            try:
                sources += _manifest_sources(path)
            except (ValueError, json.JSONDecodeError, UnicodeDecodeError) as err:
                sources.append(ScanSource(item, error=f"{path}: not a readable scan manifest ({err})"))
        elif path.exists() or path.is_symlink():
            sources.append(ScanSource(item, item))  # the reader names what is wrong with it
        elif glob.has_magic(item):
            matches = sorted(glob.glob(str(path), recursive=True))
            sources += [ScanSource(m, m) for m in matches] or [ScanSource(item, error=f"{item}: no files match")]
        else:
            sources.append(ScanSource(item, error=f"{item}: no such file or folder"))
    unique = {}
    for source in sources:  # a scan named twice (a folder and a glob over it) is reported once
        unique.setdefault(source.scan, source)
    return list(unique.values())


# ---------------------------------------------------------------------------------------------------------------------
# The generation loop


def read_jsonl_records(path: Path, key: str) -> dict[str, dict]:
    """Records of a JSON-lines file by `key`; a partial last line (an interrupted write) is dropped."""
    done: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and key in record:
                done[str(record[key])] = record
    return done


def diagnosis_records(diagnosis, digits: int | None = None) -> list[list[dict]]:
    """A `DiaLlamaDiagnosis` → per case, the [{disease, probability, present}] list of the record schema
    (probabilities rounded to `digits` when given)."""
    return [[{"disease": name, "probability": v["probability"] if digits is None else round(v["probability"], digits),
              "present": v["present"]} for name, v in case.items()] for case in diagnosis.to_records()]


@torch.no_grad()
def generate_batch(model, processor, inputs: dict, **generation_kwargs) -> tuple[list[str], list[list[dict]]]:
    """One batch of model inputs → (reports, diagnoses as [{disease, probability, present}] per case)."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    out = model.generate(**inputs, return_dict_in_generate=True, **generation_kwargs)
    return processor.batch_decode(out.sequences), diagnosis_records(out["diagnoses"])


def _rounded(diagnoses: list[dict], digits: int = 6) -> list[dict]:
    return [{**d, "probability": round(d["probability"], digits)} for d in diagnoses]


def stream_records(model, processor, items: list, *, key: Callable[[Any], str], key_field: str,
                   load: Callable[[Any], torch.Tensor], record: Callable[[Any, str, list[dict]], dict],
                   output: Path | None = None, error_record: Callable[[Any, str], dict] | None = None,
                   batch_size: int = 4, emit: Callable[[dict], None] | None = None, progress: bool = True,
                   description: str = "generating", **generation_kwargs) -> Iterator[dict]:
    """Generate for every item whose `key(item)` is not yet the `key_field` of a record in `output` (JSON lines),
    yielding each record as it is written. `load(item)` gives its pixel values (C, H, W, D); when it raises,
    `error_record(item, message)` is written instead (without `error_record` the error propagates)."""
    done = read_jsonl_records(output, key_field) if output else {}
    sink = None
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.exists():  # rewrite without a partial last line
            output.write_text("".join(json.dumps(r) + "\n" for r in done.values()), encoding="utf-8")
        sink = output.open("a", encoding="utf-8")
    todo = [item for item in items if key(item) not in done]
    bar = tqdm(total=len(todo), desc=description, unit="case", disable=not progress, file=sys.stderr)

    def write(item, rec: dict) -> dict:
        if sink is not None:
            sink.write(json.dumps(rec) + "\n")
            sink.flush()
        if emit is not None:
            emit(rec)
        bar.update(1)
        return rec

    try:
        pending: list[tuple[Any, torch.Tensor]] = []
        for index, item in enumerate(todo):
            try:
                pending.append((item, load(item)))
            except Exception as err:
                if error_record is None:
                    raise
                yield write(item, error_record(item, _error_message(err)))
            if pending and (len(pending) == batch_size or index == len(todo) - 1):
                batch_items, pixels = zip(*pending)
                pending = []
                inputs = dict(processor.pad([processor.prompt_ids() for _ in batch_items], side="left"))
                inputs["pixel_values"] = torch.stack(pixels)
                reports, diagnoses = generate_batch(model, processor, inputs, **generation_kwargs)
                for item, text, dx in zip(batch_items, reports, diagnoses):
                    yield write(item, record(item, text, dx))
    finally:
        bar.close()
        if sink is not None:
            sink.close()


def _error_message(err: BaseException) -> str:
    text = err.args[0] if isinstance(err, KeyError) and err.args and isinstance(err.args[0], str) else str(err)
    return text.strip() or type(err).__name__


# ---------------------------------------------------------------------------------------------------------------------
# `dia-llama generate`


def generate_reports(model, processor, scans: list, max_new_tokens: int | None = None, batch_size: int = 4,
                     **generation_kwargs) -> list[dict]:
    """Reports and diagnoses for a list of scans (paths or arrays), batched; a scan that cannot be read raises."""
    if max_new_tokens is not None:
        generation_kwargs["max_new_tokens"] = max_new_tokens
    items = list(enumerate(scans))
    return list(stream_records(
        model, processor, items, key=lambda item: str(item[0]), key_field="scan",
        load=lambda item: processor.image_processor(item[1], return_tensors="pt")["pixel_values"][0],
        record=lambda item, text, dx: {"scan": _scan_name(item[1]), "report": text, "diagnoses": _rounded(dx)},
        batch_size=batch_size, progress=False, **generation_kwargs))


def _scan_name(scan) -> str:
    return str(scan) if isinstance(scan, (str, Path)) else "<array>"


def format_record(record: dict) -> str:
    """A record as text for the terminal."""
    if "error" in record:
        return f"== {record['scan']} ==\nerror: {record['error']}\n"
    lines = [f"== {record['scan']} ==", f"{'disease':<34}{'probability':>12}  decision"]
    for dx in record["diagnoses"]:
        lines.append(f"{dx['disease']:<34}{dx['probability']:>12.3f}  {'present' if dx['present'] else 'absent'}")
    lines += ["", "Report:", record["report"], ""]
    return "\n".join(lines)


@dataclass
class GenerateSummary:
    written: int = 0
    failed: int = 0
    skipped: int = 0  # already in the output file


def generate_to_stream(model, processor, sources: list[ScanSource], model_name: str, output: Path | None = None,
                       as_json: bool = False, batch_size: int = 4, progress: bool = True, out=None,
                       **generation_kwargs) -> GenerateSummary:
    """`dia-llama generate`: one record per source, printed to `out` (stdout) as JSON lines or text and appended to
    `output` (resumable). Returns the counts."""
    out = out or sys.stdout
    summary = GenerateSummary()
    done = read_jsonl_records(output, "scan") if output else {}
    summary.skipped = sum(s.scan in done for s in sources)

    def load(source: ScanSource):
        if source.error:
            raise ValueError(source.error)
        return processor.image_processor(source.path, return_tensors="pt")["pixel_values"][0]

    def emit(rec: dict) -> None:
        print(json.dumps(rec) if as_json else format_record(rec), file=out, flush=True)

    for rec in stream_records(
        model, processor, sources, key=lambda s: s.scan, key_field="scan", load=load, output=output, emit=emit,
        record=lambda s, text, dx: {"scan": s.scan, "report": text, "diagnoses": _rounded(dx), "model": model_name},
        error_record=lambda s, message: {"scan": s.scan, "error": message, "model": model_name},
        batch_size=batch_size, progress=progress, **generation_kwargs,
    ):
        if "error" in rec:
            summary.failed += 1
        else:
            summary.written += 1
    return summary


# ---------------------------------------------------------------------------------------------------------------------
# The `ct-report-generation` pipeline


def register_pipeline() -> None:
    """Register the `ct-report-generation` task with transformers' pipeline registry (once)."""
    from transformers import AutoModelForImageTextToText
    from transformers.pipelines import PIPELINE_REGISTRY

    from .pipeline_dia_llama import PIPELINE_TASK, CTReportGenerationPipeline

    if PIPELINE_TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASK, pipeline_class=CTReportGenerationPipeline, pt_model=AutoModelForImageTextToText,
            type="multimodal",
        )


register_pipeline()


__all__ = [
    "RECORD_SCHEMA",
    "ScanSource",
    "GenerateSummary",
    "QUANTIZATION_SKIP_MODULES",
    "check_quantization_available",
    "load_for_inference",
    "load_pipeline",
    "quantization_config",
    "expand_scan_sources",
    "stream_records",
    "generate_batch",
    "generate_reports",
    "generate_to_stream",
    "format_record",
    "read_jsonl_records",
    "register_pipeline",
]
