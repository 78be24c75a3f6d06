"""Fixed tables of the generator: version, field of view, prevalences, disease -> finding kind, random streams,
tissue codes and lung lobe windows.

Changing RANDOM_STREAMS, the prevalences or any number here changes the generated cases (bump GENERATOR_VERSION).
"""

from __future__ import annotations

import functools

import numpy as np

GENERATOR_VERSION = "1.0"
FOV_MM = (360.0, 360.0, 300.0)  # default field of view (AP, RL, SI); spacing = FOV / volume_size
SPLITS = ("train", "validation", "test")
NO_FINDING = "no finding"

# Default prevalences. CheXpert-14 follows the imbalance of CTRG-Chest (lung lesion 57 %, enlarged
# cardiomediastinum 35 %, pleural other 25 %, ...), with every class at >= 3 % so all of them occur.
# CT-RATE-18 follows the rough train-set frequencies of CT-RATE. "no finding" is derived, never sampled.
DEFAULT_PREVALENCE: dict[str, dict[str, float]] = {
    "chexpert14": {
        "enlarged cardiomediastinum": 0.35,
        "cardiomegaly": 0.10,
        "lung opacity": 0.08,
        "lung lesion": 0.55,
        "edema": 0.03,
        "consolidation": 0.06,
        "pneumonia": 0.03,
        "atelectasis": 0.04,
        "pneumothorax": 0.03,
        "pleural effusion": 0.14,
        "pleural other": 0.25,
        "fracture": 0.04,
        "support devices": 0.08,
    },
    "ctrate18": {
        "medical material": 0.12,
        "arterial wall calcification": 0.28,
        "cardiomegaly": 0.10,
        "pericardial effusion": 0.07,
        "coronary artery wall calcification": 0.25,
        "hiatal hernia": 0.13,
        "lymphadenopathy": 0.25,
        "emphysema": 0.20,
        "atelectasis": 0.25,
        "lung nodule": 0.45,
        "lung opacity": 0.38,
        "pulmonary fibrotic sequela": 0.27,
        "pleural effusion": 0.12,
        "mosaic attenuation pattern": 0.08,
        "peribronchial thickening": 0.11,
        "consolidation": 0.17,
        "bronchiectasis": 0.10,
        "interlobular septal thickening": 0.08,
    },
}

# disease name -> internal finding kind (the painters are shared by both disease sets; one kind per disease)
FINDING_KIND: dict[str, dict[str, str]] = {
    "chexpert14": {
        "enlarged cardiomediastinum": "mediastinum",
        "cardiomegaly": "cardiomegaly",
        "lung opacity": "ggo",
        "lung lesion": "nodule",
        "edema": "edema",
        "consolidation": "consolidation",
        "pneumonia": "pneumonia",
        "atelectasis": "atelectasis",
        "pneumothorax": "pneumothorax",
        "pleural effusion": "effusion",
        "pleural other": "pleural_plaque",
        "fracture": "fracture",
        "support devices": "device",
    },
    "ctrate18": {
        "medical material": "device",
        "arterial wall calcification": "aortic_calc",
        "cardiomegaly": "cardiomegaly",
        "pericardial effusion": "pericardial_effusion",
        "coronary artery wall calcification": "coronary_calc",
        "hiatal hernia": "hiatal_hernia",
        "lymphadenopathy": "lymphadenopathy",
        "emphysema": "emphysema",
        "atelectasis": "atelectasis",
        "lung nodule": "nodule",
        "lung opacity": "ggo",
        "pulmonary fibrotic sequela": "fibrosis",
        "pleural effusion": "effusion",
        "mosaic attenuation pattern": "mosaic",
        "peribronchial thickening": "peribronchial",
        "consolidation": "consolidation",
        "bronchiectasis": "bronchiectasis",
        "interlobular septal thickening": "septal",
    },
}

# Random stream ids: stream i of a case is np.random.default_rng([case_seed, i]). Never reorder, only append
# (changing them changes every generated case).
RANDOM_STREAMS = (
    "anatomy", "noise", "report", "mediastinum", "cardiomegaly", "ggo", "nodule", "edema", "consolidation",
    "pneumonia", "atelectasis", "pneumothorax", "effusion", "pleural_plaque", "fracture", "device",
    "aortic_calc", "coronary_calc", "pericardial_effusion", "hiatal_hernia", "lymphadenopathy", "emphysema",
    "fibrosis", "mosaic", "peribronchial", "bronchiectasis", "septal",
)


class Tissue:
    """Tissue codes of the label map (uint8), the order of the original generator."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    MEDIASTINAL_FAT = 3
    ABDOMEN = 4
    LUNG = 5
    PULMONARY_VESSEL = 6
    AIRWAY = 7
    AIRWAY_WALL = 8
    HEART = 9
    GREAT_VESSEL = 10
    BONE = 11
    SOFT_TISSUE = 12
    PNEUMOTHORAX = 13
    FLUID = 14
    METAL = 15
    LESION = 16
    CALCIUM = 17
    COUNT = 18


@functools.cache
def _tissue_lookup(codes: tuple[int, ...]) -> np.ndarray:
    table = np.zeros(256, bool)
    table[list(codes)] = True
    return table


def tissue_in(tissue: np.ndarray, codes) -> np.ndarray:
    """``np.isin(tissue, codes)`` for a uint8 tissue map, by table lookup (several times faster on small boxes)."""
    return _tissue_lookup(tuple(int(c) for c in codes))[tissue]


LUNG_TISSUES = (Tissue.LUNG, Tissue.PULMONARY_VESSEL, Tissue.AIRWAY, Tissue.AIRWAY_WALL)
SIDES = ("right", "left")
SIDE_SIGN = {"right": -1.0, "left": 1.0}  # sign of the RL coordinate (> 0 = patient left)
# lobe windows in lung-relative coordinates: (height fraction range, AP fraction range; -1 anterior, +1 posterior)
LOBE_WINDOWS = {
    "upper": ((0.60, 0.80), (-0.5, 0.3)),
    "middle": ((0.30, 0.46), (-0.65, -0.25)),
    "lower": ((0.12, 0.34), (0.05, 0.6)),
}
