"""Publish a Dia-LLaMA checkpoint on the Hugging Face Hub: staging, model card, one-commit push.

`stage_for_hub` copies exactly what gets uploaded (safetensors weights, configs, processor/tokenizer files,
remote-code modules, `metrics.json`, a rendered `README.md`) into a folder; `push_to_hub` stages into a
temporary folder and uploads it as ONE `HfApi.upload_folder` commit (transformers' `model.push_to_hub`
writes its own README and makes one commit per object). The model card is rendered by `dia_llama.cards` from the one
template `resources/model_card.md`; its `model-index` is filled from the checkpoint's `metrics.json`.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

from .cards import (  # noqa: F401  (the card API, also importable from here)
    CARD_TEMPLATE,
    build_model_index,
    render_card_from_dicts,
    render_model_card,
    validate_model_card,
)

logger = logging.getLogger(__name__)

CONFIG_FILES = ("config.json", "generation_config.json")
PROCESSOR_FILES = (
    "processor_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt",
    "chat_template.jinja", "chat_template.json",
)
EXTRA_FILES = ("metrics.json", "training.json")  # both card-safe: numbers and public names, no paths
# Files whose `auto_map` may name remote-code modules.
AUTO_MAP_FILES = ("config.json", "processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Trainer / DeepSpeed state that may sit beside the weights: never uploaded, not an error.
TRAINING_STATE = re.compile(
    r"^(optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt|training_args\.bin|trainer_state\.json|rng_state(_\d+)?\.pth"
    r"|latest|zero_to_fp32\.py)$"
)
# Remote files a push may replace or delete so the repo mirrors the staged model (never README/others).
PUSH_DELETE_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.py"]


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
    processor/tokenizer files, remote-code modules (auto_map + known set + relative imports), `metrics.json`,
    `training.json`.
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


# ---------------------------------------------------------------------------------------------- push
def _stale_top_level_files(api, repo_id: str, revision: str | None, staged: Path) -> list[str]:
    """Remote top-level files matching `PUSH_DELETE_PATTERNS` that the staged folder does not hold, by exact name
    (a pattern such as "*.json" would also match files in sub-folders)."""
    keep = {p.name for p in staged.iterdir()}
    return [f for f in api.list_repo_files(repo_id, revision=revision) if "/" not in f and f not in keep
            and any(fnmatch.fnmatch(f, pattern) for pattern in PUSH_DELETE_PATTERNS)]


def push_to_hub(model_dir, repo_id: str, *, private: bool = False, revision: str | None = None,
                commit_message: str | None = None, token: str | None = None, dry_run_dir=None) -> str | Path:
    """Stage `model_dir` and upload it to `repo_id` as one commit; returns the commit URL.

    With `dry_run_dir`, only stage there and return that folder (nothing touches the network). The repo is
    created if needed (`private` applies only to a new repo); a `revision` branch is created from `main` if
    missing. Remote weights/JSON/.py files at the top level that the staged folder lacks are deleted in the same
    commit so the revision mirrors the checkpoint; sub-folders (a Trainer's `last-checkpoint/`, `runs/`) are left
    whole. `token=None` lets huggingface_hub find one (HF_TOKEN, `hf auth login`).
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
            repo_id=repo_id, folder_path=staged, revision=revision,
            delete_patterns=_stale_top_level_files(api, repo_id, revision, staged) or None,
            commit_message=commit_message or f"Upload Dia-LLaMA checkpoint {Path(model_dir).resolve().name}",
        )
    return info.commit_url


__all__ = ["stage_for_hub", "push_to_hub", "render_model_card", "render_card_from_dicts", "build_model_index",
           "validate_model_card", "HubStagingError"]
