"""The table of finding kinds: how each one changes the anatomy and / or is painted, and in which order.

A case applies, in order, the anatomy modifiers of its present kinds (``MODIFY_ORDER``), draws the anatomy,
then runs the painters (``PAINT_ORDER``); a kind with both gets the modifier's parameters in its painter. Every
kind draws from its own random stream, so toggling one label changes only that finding's voxels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import chest_findings as chest
from . import lung_findings as lung


@dataclass(frozen=True)
class FindingKind:
    modify_anatomy: Callable | None = None  # (anatomy, rng) -> params, before the anatomy is drawn
    paint: Callable | None = None  # (canvas, rng, params from modify_anatomy or None) -> params


FINDING_KINDS: dict[str, FindingKind] = {
    "cardiomegaly": FindingKind(modify_anatomy=chest.enlarge_heart),
    "pericardial_effusion": FindingKind(modify_anatomy=chest.add_pericardial_effusion),
    "mediastinum": FindingKind(modify_anatomy=chest.widen_mediastinum, paint=chest.paint_mediastinum),
    "atelectasis": FindingKind(modify_anatomy=chest.raise_diaphragm, paint=lung.paint_atelectasis),
    "pneumothorax": FindingKind(modify_anatomy=chest.collapse_lung),
    "effusion": FindingKind(paint=chest.paint_effusion),
    "pleural_plaque": FindingKind(paint=chest.paint_pleural_plaque),
    "edema": FindingKind(paint=lung.paint_edema),
    "septal": FindingKind(paint=lung.paint_septal),
    "mosaic": FindingKind(paint=lung.paint_mosaic),
    "emphysema": FindingKind(paint=lung.paint_emphysema),
    "ggo": FindingKind(paint=lung.paint_ggo),
    "pneumonia": FindingKind(paint=lung.paint_pneumonia),
    "consolidation": FindingKind(paint=lung.paint_consolidation),
    "fibrosis": FindingKind(paint=lung.paint_fibrosis),
    "bronchiectasis": FindingKind(paint=lung.paint_bronchiectasis),
    "peribronchial": FindingKind(paint=lung.paint_peribronchial),
    "nodule": FindingKind(paint=lung.paint_nodule),
    "lymphadenopathy": FindingKind(paint=chest.paint_lymphadenopathy),
    "hiatal_hernia": FindingKind(paint=chest.paint_hiatal_hernia),
    "aortic_calc": FindingKind(paint=chest.paint_aortic_calcification),
    "coronary_calc": FindingKind(paint=chest.paint_coronary_calcification),
    "fracture": FindingKind(paint=chest.paint_fracture),
    "device": FindingKind(paint=chest.paint_device),
}

# kinds that change the anatomy before it is drawn, then the painted ones, in painting order (later ones paint
# over earlier ones)
MODIFY_ORDER = ("cardiomegaly", "pericardial_effusion", "mediastinum", "atelectasis", "pneumothorax")
PAINT_ORDER = (
    "effusion", "pleural_plaque", "edema", "septal", "mosaic", "emphysema", "ggo", "pneumonia", "consolidation",
    "atelectasis", "fibrosis", "bronchiectasis", "peribronchial", "nodule", "mediastinum", "lymphadenopathy",
    "hiatal_hernia", "aortic_calc", "coronary_calc", "fracture", "device",
)
