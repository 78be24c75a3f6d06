"""Fitted decision-layer parameters: the shipped resource ``resources/labeler_params.json``.

One entry per label source: ``"chexbert"`` (CheXbert's labels of CTRG-Chest reports, CheXpert-14) and ``"ctrate"``
(CT-RATE's hand labels, CT-RATE-18); each holds per-class weights keyed by feature name, so a vocabulary change that
renames a feature is caught by :func:`check_params` (and by the tests).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from .features import FeatureSpace
from .fitted import NO_FINDING_FEATURES, DecisionLayer
from .vocabulary import CONCEPT_SETS

SOURCES = {"chexbert": "chexpert14", "ctrate": "ctrate18"}
PARAMS_PATH = Path(__file__).resolve().parents[1] / "resources" / "labeler_params.json"


def build_space(source_or_set: str, names=None) -> FeatureSpace:
    """The feature space of a label source (or disease set), for all its classes or ``names``."""
    from ..configuration_dia_llama import DISEASE_SETS

    key = SOURCES.get(source_or_set, source_or_set)
    names = list(names) if names is not None else list(DISEASE_SETS[key])
    return FeatureSpace(names, CONCEPT_SETS[key], anywhere=key == "chexpert14")


def layer_to_json(layer: DecisionLayer, **meta) -> dict:
    return {**meta, "disease_names": list(layer.space.names), "classes": layer.params}


def write_params(layers: dict[str, dict], path: Path = PARAMS_PATH) -> Path:
    doc = {"format": 1, "about": "fitted by scripts/labeler_crossval.py --write-params; see docs/labelers.md",
           **layers}
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    load_params.cache_clear()
    return path


@cache
def load_params(path: str = str(PARAMS_PATH)) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_params(source: str, params: dict | None = None) -> list[str]:
    """Feature names of the shipped parameters of ``source`` that the current feature space lacks, and vice versa."""
    params = params or load_params()[source]
    space = build_space(source)
    problems = []
    for cls, p in params["classes"].items():
        expected = set(space.feature_names.get(cls, NO_FINDING_FEATURES))
        got = set(p["weights"])
        problems += [f"{cls}: unknown {f}" for f in sorted(got - expected)]
        problems += [f"{cls}: missing {f}" for f in sorted(expected - got)]
    return problems


def class_params(source: str, cls: str) -> dict | None:
    """The shipped parameters of one class of ``source`` (None when absent)."""
    return load_params()[source]["classes"].get(cls)
