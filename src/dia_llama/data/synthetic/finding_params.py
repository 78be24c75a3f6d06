"""Parameters of the painted findings: what the report describes and the manifest stores under "findings".

One dataclass per finding kind; ``as_dict()`` gives the JSON form (field order = key order; None fields are left
out). Sizes are in mm, attenuation in HU, sides "right" / "left", lobes "upper" / "middle" / "lower".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class FindingParams:
    def as_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class CardiomegalyParams(FindingParams):
    ctr: float  # cardiothoracic ratio


@dataclass
class PericardialEffusionParams(FindingParams):
    thickness_mm: int


@dataclass
class MediastinumParams(FindingParams):
    """Enlarged cardiomediastinum: widened upper mediastinum with enlarged nodes."""

    width_mm: int
    widening_mm: int
    stations: list[str] | None = None  # set by the painter
    largest_node_mm: int | None = None


@dataclass
class AtelectasisParams(FindingParams):
    side: str
    lobe: str
    diaphragm_raise_mm: int
    length_mm: int | None = None  # set by the painter


@dataclass
class PneumothoraxParams(FindingParams):
    side: str
    rim_mm: int
    collapse: float  # lateral size of the collapsed lung / normal


@dataclass
class LesionSite(FindingParams):
    side: str
    lobe: str
    size_mm: list[int]  # (largest, second) axial diameters


@dataclass
class NoduleParams(FindingParams):
    """The largest nodule's site and size, plus the others."""

    count: int
    side: str
    lobe: str
    size_mm: list[int]
    kind: str  # "mass" (>= 30 mm) or "nodule"
    others: list[LesionSite]


@dataclass
class OpacityParams(FindingParams):
    """Ground-glass opacity."""

    side: str
    lobe: str
    size_mm: list[int]
    hu: int


@dataclass
class ConsolidationParams(FindingParams):
    side: str
    lobe: str
    size_mm: list[int]
    hu: int
    air_bronchogram: bool


@dataclass
class PneumoniaParams(FindingParams):
    sides: list[str]
    lobe: str
    patches: int


@dataclass
class EffusionParams(FindingParams):
    sides: list[str]
    depth_mm: dict[str, int]
    hu: int


@dataclass
class PleuralPlaqueParams(FindingParams):
    side: str
    wall: str  # "lateral", "posterior" or "anterior"
    thickness_mm: int
    calcified: bool
    plaques: int
    extent_mm: int


@dataclass
class EdemaParams(FindingParams):
    delta_hu: int
    septal_period_mm: int


@dataclass
class SeptalParams(FindingParams):
    distribution: str  # "lower" or "diffuse"
    period_mm: int


@dataclass
class MosaicParams(FindingParams):
    dense_delta_hu: int
    lucent_delta_hu: int


@dataclass
class EmphysemaParams(FindingParams):
    count: int
    max_mm: int
    distribution: str


@dataclass
class FibrosisParams(FindingParams):
    side: str
    lobe: str
    strands: int


@dataclass
class PeribronchialParams(FindingParams):
    wall_mm: int
    distribution: str


@dataclass
class BronchiectasisParams(FindingParams):
    side: str
    lobe: str
    count: int
    diameter_mm: int


@dataclass
class LymphadenopathyParams(FindingParams):
    stations: list[str]
    largest_node_mm: int


@dataclass
class HiatalHerniaParams(FindingParams):
    size_mm: int
    contents: str | None = None  # None when the hernia falls outside the volume


@dataclass
class AorticCalcificationParams(FindingParams):
    plaques: int


@dataclass
class CoronaryCalcificationParams(FindingParams):
    segments: int


@dataclass
class FractureParams(FindingParams):
    side: str
    rib: int  # rib number, counted from the top
    gap_mm: int
    displacement_mm: int


@dataclass
class DeviceParams(FindingParams):
    kind: str  # "pacemaker", "port catheter" or "central venous catheter"
    side: str
