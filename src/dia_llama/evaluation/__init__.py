"""Evaluation: report metrics (NLG, clinical efficacy), scoring files, threshold calibration, attention localisation,
evaluating a model on a data set split, and one markdown renderer. `dia_llama_metrics/` is the same metrics as a 🤗
`evaluate` module."""

from .calibration import calibrate_thresholds
from .localization import model_attention_localization, pointing_scores, summarize_localization
from .markdown import metrics_markdown
from .metrics import NLG_METRICS, NLG_MODES, clinical_efficacy, diagnosis_metrics, evaluate_module_path, nlg_metrics
from .model_evaluation import evaluate_model, generate_predictions, score_predictions
from .scoring import build_labeler, label_file, read_table, score_file

__all__ = [
    "NLG_METRICS",
    "NLG_MODES",
    "build_labeler",
    "calibrate_thresholds",
    "clinical_efficacy",
    "diagnosis_metrics",
    "evaluate_module_path",
    "evaluate_model",
    "generate_predictions",
    "label_file",
    "metrics_markdown",
    "model_attention_localization",
    "nlg_metrics",
    "pointing_scores",
    "read_table",
    "score_file",
    "score_predictions",
    "summarize_localization",
]
