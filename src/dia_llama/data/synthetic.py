"""Synthetic chest-CT benchmark: procedural phantoms with label-driven findings and templated reports.

The embedded default data set of the project (demo, tests, ablations): no real CT can be downloaded.
Each case is a procedural chest at realistic HU (body wall, fat, lungs with vessels and airways, heart,
aorta, mediastinum, spine, ribs, sternum, upper abdomen) with per-patient variation. Findings are drawn
from labels, are large or bright enough to survive resizing to 64x64x32, and the report describes the
phantom's real parameters (side, lobe, size in mm, ...).

Array layout is canonical (see ``dia_llama.volume_io``): ``array[row, col, slice]`` = (H, W, D), rows run
anterior->posterior, columns patient right->left, slices inferior->superior. Internally all geometry is in
mm in the same axis order: a point is ``(ap, rl, si)`` with ap > 0 posterior, rl > 0 patient left, si > 0
superior, measured from the volume centre.

Determinism: ``make_case`` draws one integer from the given generator and derives independent streams for
the anatomy, the noise, the report wording and every finding kind, so toggling one label changes only that
finding's voxels (and the wording). ``synthesize_benchmark`` seeds case ``i`` from ``(seed, i)``, so any
number of worker processes writes byte-identical files (nibabel's gzip writer stores mtime 0).
"""

from __future__ import annotations

import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..configuration_dia_llama import DISEASE_SETS

__all__ = [
    "DEFAULT_PREVALENCE",
    "GENERATOR_VERSION",
    "SPLITS",
    "make_case",
    "sample_labels",
    "synthesize_benchmark",
]

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

# disease name -> internal finding kind (primitives are shared by both sets)
_KIND = {
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
# fixed stream ids: never reorder, only append (changing them changes every generated case)
_STREAMS = [
    "anatomy", "noise", "report", "mediastinum", "cardiomegaly", "ggo", "nodule", "edema", "consolidation",
    "pneumonia", "atelectasis", "pneumothorax", "effusion", "pleural_plaque", "fracture", "device",
    "aortic_calc", "coronary_calc", "pericardial_effusion", "hiatal_hernia", "lymphadenopathy", "emphysema",
    "fibrosis", "mosaic", "peribronchial", "bronchiectasis", "septal",
]
# kinds that change the anatomy before it is drawn, then the painted ones, in painting order
_PRE_KINDS = ("cardiomegaly", "pericardial_effusion", "mediastinum", "atelectasis", "pneumothorax")
_PAINT_ORDER = (
    "effusion", "pleural_plaque", "edema", "septal", "mosaic", "emphysema", "ggo", "pneumonia", "consolidation",
    "atelectasis", "fibrosis", "bronchiectasis", "peribronchial", "nodule", "mediastinum", "lymphadenopathy",
    "hiatal_hernia", "aortic_calc", "coronary_calc", "fracture", "device",
)

# tissue codes of the label map
AIR, FAT, MUSCLE, MEDFAT, ABDOMEN, LUNG, PVESSEL, AIRWAY, AWALL, HEART, GVESSEL, BONE, SOFT, PTX, FLUID, METAL, \
    LESION, CALC = range(18)
_LUNG_TISSUE = (LUNG, PVESSEL, AIRWAY, AWALL)
_SIDES = ("right", "left")
_SIGN = {"right": -1.0, "left": 1.0}
# lobe windows in lung-relative coordinates: (height fraction range, AP fraction range; -1 anterior, +1 posterior)
_LOBES = {"upper": ((0.60, 0.80), (-0.5, 0.3)), "middle": ((0.30, 0.46), (-0.65, -0.25)),
          "lower": ((0.12, 0.34), (0.05, 0.6))}


# ----------------------------------------------------------------------------------------------- geometry
def _r(x, nd: int = 1) -> float:
    return round(float(x), nd)


class _Grid:
    """Voxel-centre coordinates in mm (axis order AP, RL, SI, origin at the volume centre)."""

    def __init__(self, shape, spacing):
        self.shape = tuple(int(n) for n in shape)
        self.sp = tuple(float(s) for s in spacing)
        self.axes = [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(self.shape, self.sp)]
        self.min_r = 0.5 * max(self.sp[0], self.sp[1])  # thinnest radius that survives the in-plane sampling

    def box(self, lo, hi):
        """Index slices + open sub-grids (ap (h,1,1), rl (1,w,1), si (1,1,d)) of the box [lo, hi] mm, or None."""
        sl, sub = [], []
        for ax in range(3):
            c, s, n = self.axes[ax], self.sp[ax], self.shape[ax]
            i0 = max(0, int(math.floor((lo[ax] - c[0]) / s)))
            i1 = min(n, int(math.ceil((hi[ax] - c[0]) / s)) + 1)
            if i1 <= i0:
                return None
            sl.append(slice(i0, i1))
            sub.append(c[i0:i1])
        return tuple(sl), (sub[0][:, None, None], sub[1][None, :, None], sub[2][None, None, :])

    def index(self, p):
        """Nearest voxel index of point p (clipped)."""
        return tuple(int(np.clip(round((p[a] - self.axes[a][0]) / self.sp[a]), 0, self.shape[a] - 1)) for a in range(3))


def _ellipsoid(g: _Grid, c, radii, angle: float = 0.0, power: float = 2.0):
    """Ellipsoid with radii (r_ap, r_rl, r_si) rotated by `angle` rad in the axial plane (rl axis towards -ap).

    Returns (slices, q) with q = normalised radius ** power over the bounding box (inside where q <= 1), or None.
    """
    rin = max(radii[0], radii[1])
    bx = g.box((c[0] - rin, c[1] - rin, c[2] - radii[2]), (c[0] + rin, c[1] + rin, c[2] + radii[2]))
    if bx is None:
        return None
    sl, (a, r, s) = bx
    da, dr = a - c[0], r - c[1]
    if angle:
        ca, sa = math.cos(angle), math.sin(angle)
        da, dr = ca * da + sa * dr, -sa * da + ca * dr
    if power == 2.0:
        q = (da / radii[0]) ** 2 + (dr / radii[1]) ** 2 + ((s - c[2]) / radii[2]) ** 2
    else:
        q = np.abs(da / radii[0]) ** power + np.abs(dr / radii[1]) ** power + np.abs((s - c[2]) / radii[2]) ** power
    return sl, q


def _segment_dist(g: _Grid, p0, p1, reach: float):
    """Distance (mm) to the segment p0-p1 over its bounding box grown by `reach` -> (slices, dist) or None."""
    p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
    bx = g.box(np.minimum(p0, p1) - reach, np.maximum(p0, p1) + reach)
    if bx is None:
        return None
    sl, (a, r, s) = bx
    d = p1 - p0
    w0, w1, w2 = a - p0[0], r - p0[1], s - p0[2]
    t = np.clip((w0 * d[0] + w1 * d[1] + w2 * d[2]) / max(float(d @ d), 1e-6), 0.0, 1.0)
    return sl, np.sqrt((w0 - t * d[0]) ** 2 + (w1 - t * d[1]) ** 2 + (w2 - t * d[2]) ** 2)


def _superellipse(g: _Grid, c_ap, c_rl, a_ap, a_rl, n):
    """Normalised superellipse radius over the axial plane, shape (H, W)."""
    da = (g.axes[0][:, None] - c_ap) / a_ap
    dr = (g.axes[1][None, :] - c_rl) / a_rl
    return (np.abs(da) ** n + np.abs(dr) ** n) ** (1.0 / n)


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / max(np.linalg.norm(v), 1e-9)


def _catmull_rom(points, per_segment: int = 5):
    """Smooth polyline through `points` (list of 3-vectors)."""
    p = [np.asarray(q, np.float64) for q in points]
    p = [p[0]] + p + [p[-1]]
    out = []
    for i in range(1, len(p) - 2):
        for t in np.linspace(0, 1, per_segment, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(0.5 * ((2 * p[i]) + (-p[i - 1] + p[i + 1]) * t + (2 * p[i - 1] - 5 * p[i] + 4 * p[i + 1] - p[i + 2]) * t2
                              + (-p[i - 1] + 3 * p[i] - 3 * p[i + 1] + p[i + 2]) * t3))
    out.append(p[-2])
    return out


def _apex_f(L, z):
    """Cross-section scale of lung L at heights z: 1 below the shoulder, -> 0 at the apex."""
    t = np.clip((np.asarray(z, np.float32) - L["z_sh"]) / (L["z_hi"] - L["z_sh"]), 0.0, None)
    return np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))


def _lung_point(L, uz, uy, ux):
    """Point inside lung L from relative height uz (0 base .. 1 apex), AP uy (-1..1), lateral ux (-1..1)."""
    z = L["z_lo"] + uz * (L["z_hi"] - L["z_lo"])
    f = float(_apex_f(L, z))
    return (L["cy"] + uy * L["ry"] * f, L["cx"] + L["s"] * ux * L["rx"] * f, z)


def _effective_lung(L):
    """Lung parameters after a pneumothorax collapse (medial border kept, apex lowered)."""
    k = L.get("collapse", 1.0)
    if k >= 1.0:
        return L
    E = dict(L)
    E["cx"] = L["cx"] - L["s"] * L["rx"] * (1.0 - k)
    E["rx"], E["ry"] = L["rx"] * k, L["ry"] * (0.5 + 0.5 * k)
    drop = (1.0 - k) * 0.6 * (L["z_hi"] - L["z_sh"])
    E["z_hi"], E["z_sh"] = L["z_hi"] - drop, L["z_sh"] - 0.5 * drop
    E["z_lo"] = L["z_lo"] + (1.0 - k) * 20.0
    return E


def _lung_shape(g: _Grid, L, cav2d, mid, halfgap):
    """Boolean (H, W, D) lung of parameters L inside the cavity, lateral to the mediastinal half-gap(z)."""
    rho = _superellipse(g, L["cy"], L["cx"], L["ry"], L["rx"], L["n"])  # (H, W)
    zd = L["z_lo"] + L["dh"] * np.clip(1.0 - rho * rho, 0.0, 1.0)  # diaphragm dome height (H, W)
    f = _apex_f(L, g.axes[2])  # (D,)
    m = (rho[:, :, None] <= f[None, None, :]) & (g.axes[2][None, None, :] >= zd[:, :, None]) & cav2d[:, :, None]
    m &= np.abs(g.axes[1][None, :, None] - mid) >= halfgap[None, None, :]
    return m


# ----------------------------------------------------------------------------------------------- anatomy
def _sample_anatomy(rng: np.random.Generator, g: _Grid) -> dict:
    """Per-patient anatomy parameters (mm); consumes a fixed number of draws."""
    u = rng.uniform
    A: dict = {}
    b = dict(c_ap=u(0, 12), c_rl=u(-6, 6), a_ap=u(102, 124), a_rl=u(148, 172), n=u(2.2, 2.8),
             fat=u(8, 22), mus=u(9, 14), rib_t=u(8, 10), back=u(14, 24))
    A["body"] = b
    mid = A["mid"] = b["c_rl"]
    # rib outer surface / thoracic cavity: thicker posterior wall (paraspinal muscles)
    wall = b["fat"] + b["mus"]
    A["ribsurf"] = dict(c_ap=b["c_ap"] - b["back"] / 2, a_ap=b["a_ap"] - wall - b["back"] / 2, a_rl=b["a_rl"] - wall)
    cav = A["cav"] = dict(c_ap=A["ribsurf"]["c_ap"], a_ap=A["ribsurf"]["a_ap"] - b["rib_t"],
                          a_rl=A["ribsurf"]["a_rl"] - b["rib_t"], n=b["n"])
    A["hu"] = dict(fat=u(-115, -85), muscle=u(35, 55), medfat=u(-100, -75), liver=u(52, 65), abdomen=u(30, 45),
                   lung=u(-875, -830), bone=u(550, 700), cortex=u(700, 850), marrow=u(380, 480),
                   soft=u(30, 45), noise=u(10, 20))
    A["contrast"] = bool(rng.random() < 0.3)
    A["hu"]["blood"] = u(150, 230) if A["contrast"] else u(35, 50)

    # lungs
    z_top = g.axes[2][-1]
    w_med = u(34, 46)
    z_hi = min(u(105, 125), float(z_top) + 40)
    z_lo_r = u(-105, -85)
    dz_left, dh, apex_len, n_l = u(8, 16), u(35, 50), u(65, 85), u(2.1, 2.5)
    A["w_med"] = w_med
    A["lungs"] = {}
    for side in _SIDES:
        s = _SIGN[side]
        inner, outer = mid + s * w_med / 2, mid + s * cav["a_rl"] * 1.04
        A["lungs"][side] = dict(s=s, cx=(inner + outer) / 2, rx=abs(outer - inner) / 2, cy=cav["c_ap"] + 0.02 * cav["a_ap"],
                                ry=cav["a_ap"] * 1.0, n=n_l, z_lo=z_lo_r - (dz_left if s > 0 else 0.0), dh=dh,
                                z_hi=z_hi, z_sh=z_hi - apex_len, collapse=1.0)
    A["halfgap_widen"] = None

    # spine, sternum, ribs
    vb_r = u(16, 21)
    A["spine"] = dict(r=vb_r, rx=1.15 * vb_r, ap=cav["c_ap"] + cav["a_ap"] - 0.55 * vb_r, level=u(25, 30),
                      z_off=u(0, 30), disc=u(5, 7))
    A["ribs"] = dict(pitch=u(24, 30), z0=u(0, 30), slope=u(25, 40), h=max(u(9, 12), 1.0 * g.sp[2]))
    sp_ = A["spine"]

    # airways
    ap_tr = sp_["ap"] - vb_r - u(22, 30)
    z_car = z_hi - u(45, 60)
    A["trachea"] = dict(ap=ap_tr, r=u(8, 10), z_carina=z_car)
    A["hila"] = {}
    for side in _SIDES:
        L = A["lungs"][side]
        A["hila"][side] = (cav["c_ap"] + 0.08 * cav["a_ap"], mid + L["s"] * (w_med / 2 + 0.22 * L["rx"]), z_car - 25.0)

    bronchi = [((ap_tr, mid, float(z_top) + 10), (ap_tr, mid, z_car), A["trachea"]["r"], 2.0, 0)]
    for side in _SIDES:
        L, h = A["lungs"][side], A["hila"][side]
        hb = (h[0] - 4, h[1], h[2] + 8)
        bronchi.append(((ap_tr, mid, z_car), hb, 6.0, 1.5, 1))
        lobar_targets = [(0.72, -0.1, 0.2), (0.38, -0.45, 0.3), (0.2, 0.35, 0.3)]
        for uz, uy, ux in lobar_targets:
            t = np.asarray(_lung_point(L, uz + u(-0.04, 0.04), uy + u(-0.1, 0.1), ux))
            p1 = np.asarray(hb) + 0.45 * (t - np.asarray(hb))
            bronchi.append((hb, tuple(p1), 3.5, 1.2, 2))
            for _ in range(2):
                t2 = t + rng.normal(0, 14, 3)
                bronchi.append((tuple(p1), tuple(p1 + 0.55 * (t2 - p1)), 2.2, 1.0, 3))
    A["bronchi"] = bronchi

    # pulmonary vessel trees from the hila
    targets = [(0.92, -0.1, 0.0), (0.72, -0.5, 0.4), (0.72, 0.45, 0.4), (0.48, -0.6, 0.65), (0.48, 0.55, 0.6),
               (0.22, 0.45, 0.5), (0.22, -0.35, 0.6), (0.3, 0.75, 0.05)]
    vessels = []
    for side in _SIDES:
        L, h = A["lungs"][side], np.asarray(A["hila"][side])
        for uz, uy, ux in targets:
            t = np.asarray(_lung_point(L, uz + u(-0.05, 0.05), uy + u(-0.12, 0.12), ux + u(-0.1, 0.1)))
            p1 = h + u(0.45, 0.6) * (t - h)
            vessels.append((tuple(h), tuple(p1), 4.5))
            for _ in range(2):
                t2 = t + rng.normal(0, 16, 3)
                p2 = p1 + 0.7 * (t2 - p1)
                vessels.append((tuple(p1), tuple(p2), 3.0))
                for _ in range(2):
                    d = _unit(p2 - p1) * 25.0 + rng.normal(0, 9, 3)
                    vessels.append((tuple(p2), tuple(p2 + d), 2.0))
    A["pvessels"] = vessels

    # heart (its size is set from the cardiothoracic ratio)
    H = dict(ctr=u(0.40, 0.48), theta=u(0.45, 0.7), b_rel=u(0.72, 0.85), c_rel=u(0.8, 0.95),
             rl_off=u(0.16, 0.24), ap_off=u(0.22, 0.32), fat=u(3, 5), peri_eff=0.0, peri_hu=u(5, 18))
    A["heart"] = H
    A["aorta_r"] = (u(13, 17), u(10, 13))
    A["svc_r"] = u(8, 10)
    A["esoph_r"] = u(6, 8)
    return A


def _finish_anatomy(A):
    """Derived geometry that depends on findings applied to A (heart size, vessel paths)."""
    H, cav, mid = A["heart"], A["cav"], A["mid"]
    lw = math.sqrt(math.cos(H["theta"]) ** 2 + (H["b_rel"] * math.sin(H["theta"])) ** 2)
    a = H["ctr"] * cav["a_rl"] / lw
    H["a"], H["b"], H["c"] = a, a * H["b_rel"], a * H["c_rel"]
    z_dome = max(L["z_lo"] + L["dh"] for L in A["lungs"].values())
    H["center"] = (cav["c_ap"] - H["ap_off"] * cav["a_ap"] + 0.15 * (H["b"] - 45.0),
                   mid + H["rl_off"] * cav["a_rl"] + 0.3 * (a - 60.0), z_dome + 0.65 * H["c"])
    hc = H["center"]
    tr, sp_ = A["trachea"], A["spine"]
    r_a, r_d = A["aorta_r"]
    root = (hc[0] - 0.3 * H["b"], mid + 2.0, hc[2] + 0.55 * H["c"])
    z_arch = min(tr["z_carina"] + 22.0, A["lungs"]["left"]["z_hi"] - 25.0)
    desc = (sp_["ap"] - 0.75 * sp_["r"], mid + 0.8 * sp_["rx"] + 0.6 * r_d)
    pts = [root, (root[0] - 4, mid - 12, z_arch - 28), ((root[0] + desc[0]) / 2, mid + 4, z_arch),
           (desc[0], desc[1], z_arch - 24), (desc[0] + 3, desc[1] - 3, min(L["z_lo"] for L in A["lungs"].values()) - 30)]
    path = _catmull_rom(pts, 5)
    A["aorta"] = dict(path=[tuple(map(float, p)) for p in path],
                      radii=[float(r) for r in np.interp(np.arange(len(path)), [0, 10, len(path) - 1], [r_a, r_a, r_d])])
    ap_svc, rl_svc = root[0] + 2.0, mid - (r_a + A["svc_r"] + 6.0)
    A["svc"] = dict(top=(ap_svc, rl_svc, z_arch + 60.0), bottom=(ap_svc + 4, rl_svc + 4, hc[2] + 0.45 * H["c"]))
    bif = (tr["ap"] + 10.0, mid + 8.0, tr["z_carina"] - 14.0)
    pa0 = (hc[0] - 0.5 * H["b"], hc[1] - 0.1 * a, hc[2] + 0.6 * H["c"])
    A["pa"] = [(pa0, bif, 12.0), (bif, A["hila"]["right"], 9.0), (bif, A["hila"]["left"], 9.0)]
    A["esophagus"] = dict(ap=sp_["ap"] - sp_["r"] - 8.0, rl=mid + 5.0)


class _Ctx:
    """Canvas of one case: HU volume, tissue label map, lung side map, anatomy, finding records."""

    def __init__(self, g: _Grid, A: dict):
        self.g, self.A = g, A
        self.vol = np.full(g.shape, -1000.0, np.float32)
        self.tis = np.zeros(g.shape, np.uint8)
        self.side = np.zeros(g.shape, np.uint8)  # 1 right lung, 2 left lung (shape before structures)
        self.records: dict[str, np.ndarray] = {}
        self.lung_field = None

    def paint(self, sl, mask, hu, code, allowed=None, record=None, extra=None):
        """Set HU `hu` (scalar or array broadcastable to the box) and tissue `code` where mask (& allowed)."""
        v, t = self.vol[sl], self.tis[sl]
        m = mask if allowed is None else mask & np.isin(t, allowed)
        if extra is not None:
            m = m & extra
        if np.ndim(hu):
            v[m] = np.broadcast_to(hu, m.shape)[m]
        else:
            v[m] = hu
        t[m] = code
        if record is not None:
            self.record(record, sl, m)
        return m

    def record(self, name, sl, m):
        if name not in self.records:
            self.records[name] = np.zeros(self.g.shape, bool)
        self.records[name][sl] |= m

    def lung_fraction(self, p, radius):
        """Fraction of the ball (p, radius) inside the lung field (centre voxel if the ball has no voxel)."""
        e = _ellipsoid(self.g, p, (radius, radius, radius))
        if e is not None:
            sl, q = e
            inside = q <= 1.0
            if inside.any():
                return float(self.lung_field[sl][inside].mean())
        return float(self.lung_field[self.g.index(p)])


def _render_anatomy(ctx: _Ctx):
    g, A = ctx.g, ctx.A
    hu, b, cav, mid = A["hu"], A["body"], A["cav"], A["mid"]
    vol, tis = ctx.vol, ctx.tis
    shape2 = g.shape[:2]
    # body wall layers (constant along z): fat, muscle, rib band, cavity
    body2 = _superellipse(g, b["c_ap"], b["c_rl"], b["a_ap"], b["a_rl"], b["n"]) <= 1
    mus2 = _superellipse(g, b["c_ap"], b["c_rl"], b["a_ap"] - b["fat"], b["a_rl"] - b["fat"], b["n"]) <= 1
    rs = A["ribsurf"]
    ribs2 = _superellipse(g, rs["c_ap"], mid, rs["a_ap"], rs["a_rl"], b["n"]) <= 1
    rho_cav = _superellipse(g, cav["c_ap"], mid, cav["a_ap"], cav["a_rl"], cav["n"])
    cav2 = rho_cav <= 1
    A["_cav2"], A["_rho_cav"] = cav2, rho_cav
    lab2 = np.zeros(shape2, np.uint8)
    hu2 = np.full(shape2, -1000.0, np.float32)
    lab2[body2], hu2[body2] = FAT, hu["fat"]
    lab2[mus2], hu2[mus2] = MUSCLE, hu["muscle"]
    vol[:] = hu2[:, :, None]
    tis[:] = lab2[:, :, None]
    # cavity: mediastinal fat above the diaphragm, liver / upper abdomen below
    zd = np.full(shape2, -1e9, np.float32)
    for L in A["lungs"].values():
        rho = _superellipse(g, L["cy"], L["cx"], L["ry"], L["rx"], L["n"])
        zd = np.maximum(zd, L["z_lo"] + L["dh"] * np.clip(1.0 - rho * rho, 0.0, 1.0))
    zl = [L["z_lo"] for L in A["lungs"].values()]
    dh = A["lungs"]["right"]["dh"]
    r2 = ((g.axes[1][None, :] - mid) / cav["a_rl"]) ** 2 + ((g.axes[0][:, None] - cav["c_ap"]) / cav["a_ap"]) ** 2
    zd = np.maximum(zd, np.mean(zl) + 0.75 * dh * np.clip(1.0 - r2, 0.0, 1.0))
    A["_zd"] = zd
    above = g.axes[2][None, None, :] >= zd[:, :, None]
    abd_hu = np.where(g.axes[1][None, :] < mid + 30.0, hu["liver"], hu["abdomen"]).astype(np.float32)  # (1, W)
    cav3 = np.broadcast_to(cav2[:, :, None], g.shape)
    m = cav3 & above
    vol[m], tis[m] = hu["medfat"], MEDFAT
    m = cav3 & ~above
    vol[m] = np.broadcast_to(abd_hu[:, :, None], g.shape)[m]
    tis[m] = ABDOMEN
    # ribs in the band between the cavity and the rib surface
    _draw_ribs(ctx, ribs2 & ~cav2)
    # lungs (pneumothorax: collapsed lung + air rim)
    halfgap = np.full(g.shape[2], A["w_med"] / 2.0, np.float32)
    if A["halfgap_widen"] is not None:
        dw, z0, z1 = A["halfgap_widen"]
        z = g.axes[2]
        ramp = np.clip(np.minimum(z - z0, z1 - z) / 15.0, 0.0, 1.0)
        halfgap = halfgap + 0.5 * dw * ramp
    A["_halfgap"] = halfgap
    lung_hu_ap = (g.axes[0] - cav["c_ap"]) / cav["a_ap"] * 25.0  # denser posteriorly (H,)
    for i, side in enumerate(_SIDES):
        L = A["lungs"][side]
        full = _lung_shape(g, L, cav2, mid, halfgap)
        E = _effective_lung(L)
        lung = full if E is L else _lung_shape(g, E, cav2, mid, halfgap)
        m = lung & (tis != BONE)
        vol[m] = np.broadcast_to((hu["lung"] + lung_hu_ap)[:, None, None], g.shape)[m]
        tis[m] = LUNG
        ctx.side[lung] = i + 1
        if E is not L:
            rim = full & ~lung & (tis != BONE)
            vol[rim], tis[rim] = -1000.0, PTX
            ctx.record("pneumothorax", (slice(None),) * 3, rim)
    # pulmonary vessels (only inside aerated lung)
    for p0, p1, r in A["pvessels"]:
        e = _segment_dist(g, p0, p1, max(r, g.min_r))
        if e is not None:
            sl, d = e
            ctx.paint(sl, d <= max(r, g.min_r * 0.8), 40.0, PVESSEL, allowed=(LUNG,))
    # heart: epicardial fat, optional pericardial effusion, myocardium/blood
    H = A["heart"]
    body_in = (cav3 & above)
    for extra, hu_, code, rec in ((H["fat"] + H["peri_eff"], hu["medfat"], MEDFAT, None),
                                  (H["peri_eff"], H["peri_hu"], FLUID, "pericardial_effusion"), (0.0, hu["blood"], HEART, None)):
        if code == FLUID and H["peri_eff"] <= 0:
            continue
        e = _ellipsoid(g, H["center"], (H["b"] + extra, H["a"] + extra, H["c"] + extra), H["theta"])
        if e is not None:
            sl, q = e
            ctx.paint(sl, (q <= 1.0) & body_in[sl], hu_, code, allowed=(MEDFAT, LUNG, PVESSEL, FLUID), record=rec)
    # great vessels
    ap_ = A["aorta"]
    for (p0, p1), r in zip(zip(ap_["path"][:-1], ap_["path"][1:]), ap_["radii"][1:]):
        e = _segment_dist(g, p0, p1, r)
        if e is not None:
            sl, d = e
            ctx.paint(sl, d <= r, hu["blood"], GVESSEL, allowed=(MEDFAT, LUNG, PVESSEL, ABDOMEN, FLUID))
    for p0, p1, r in [(A["svc"]["top"], A["svc"]["bottom"], A["svc_r"])] + A["pa"]:
        e = _segment_dist(g, p0, p1, r)
        if e is not None:
            sl, d = e
            ctx.paint(sl, d <= r, hu["blood"] if r > 9.5 else 45.0, GVESSEL, allowed=(MEDFAT, LUNG, PVESSEL))
    es = A["esophagus"]
    e = _segment_dist(g, (es["ap"], es["rl"], float(g.axes[2][-1]) + 10), (es["ap"], es["rl"] + 4, min(zl)), A["esoph_r"])
    if e is not None:
        sl, d = e
        ctx.paint(sl, d <= A["esoph_r"], hu["soft"], SOFT, allowed=(MEDFAT, LUNG, PVESSEL))
    # airways: wall then lumen
    for p0, p1, r, w, level in A["bronchi"]:
        e = _segment_dist(g, p0, p1, r + w)
        if e is not None:
            sl, d = e
            ctx.paint(sl, d <= r + w, 0.0 if level < 2 else -300.0, AWALL, allowed=(MEDFAT, LUNG, PVESSEL, SOFT, GVESSEL))
            ctx.paint(sl, d <= max(r, 0.6 * g.min_r if level < 3 else 0.0), -1000.0, AIRWAY,
                      allowed=(MEDFAT, LUNG, PVESSEL, SOFT, GVESSEL, AWALL))
    _draw_spine_sternum(ctx)
    ctx.lung_field = (ctx.side > 0) & np.isin(tis, _LUNG_TISSUE)


def _rib_geometry(g: _Grid, A, band2):
    """Band pixels (ii, jj), rib index k and bone mask (n, D), azimuth (0 lateral, >0 posterior) and side sign."""
    cav, R, mid = A["cav"], A["ribs"], A["mid"]
    ii, jj = np.nonzero(band2)
    apn = (g.axes[0][ii] - cav["c_ap"]) / cav["a_ap"]
    rl = g.axes[1][jj] - mid
    t = (g.axes[2][None, :] - R["slope"] * apn[:, None] - R["z0"]) / R["pitch"]
    k = np.rint(t)
    bone = np.abs(t - k) * R["pitch"] <= R["h"] / 2
    excl = ((np.abs(rl) < 18) & (apn < 0)) | ((np.abs(rl) < A["spine"]["rx"] + 14) & (apn > 0))
    bone &= ~excl[:, None]
    az = np.arctan2(apn, np.abs(rl) / cav["a_rl"])
    return ii, jj, k.astype(np.int32), bone, az, np.sign(rl)


def _draw_ribs(ctx: _Ctx, band2):
    g, A = ctx.g, ctx.A
    A["_ribband2"] = band2
    ii, jj, _, bone, _, _ = _rib_geometry(g, A, band2)
    v, t = ctx.vol[ii, jj, :], ctx.tis[ii, jj, :]  # (n, D)
    v = np.where(bone, A["hu"]["bone"], v)
    t = np.where(bone, BONE, t)
    ctx.vol[ii, jj, :], ctx.tis[ii, jj, :] = v, t


def _draw_spine_sternum(ctx: _Ctx):
    g, A = ctx.g, ctx.A
    sp_, hu, mid, cav = A["spine"], A["hu"], A["mid"], A["cav"]
    z = g.axes[2]
    da = g.axes[0][:, None] - sp_["ap"]
    dr = g.axes[1][None, :] - mid
    vb = (da / sp_["r"]) ** 2 + (dr / sp_["rx"]) ** 2 <= 1  # (H, W)
    vb_in = (da / (sp_["r"] - 3)) ** 2 + (dr / (sp_["rx"] - 3)) ** 2 <= 1
    disc = (np.mod(z - sp_["z_off"], sp_["level"]) < sp_["disc"])[None, None, :]  # (1, 1, D)
    canal_ap = sp_["ap"] + sp_["r"] + 9.0
    canal = (g.axes[0][:, None] - canal_ap) ** 2 + dr ** 2 <= 8.0 ** 2
    arch = ((g.axes[0][:, None] - canal_ap) ** 2 + dr ** 2 <= 14.0 ** 2) & (g.axes[0][:, None] > canal_ap - 4) & ~canal
    spinous = (np.abs(dr) <= max(4.0, g.min_r)) & (g.axes[0][:, None] > canal_ap) & (g.axes[0][:, None] < canal_ap + 38)
    transverse = (np.abs(g.axes[0][:, None] - canal_ap + 2) <= max(4.0, g.min_r)) & (np.abs(dr) < 32) & (np.abs(dr) > 8)
    post2 = (arch | spinous | transverse)
    hu2 = np.where(vb_in, hu["marrow"], hu["cortex"]).astype(np.float32)
    for mask2, val, code in ((post2, hu["bone"], BONE), (canal, 20.0, SOFT)):
        m = np.broadcast_to(mask2[:, :, None], ctx.g.shape) & (ctx.tis != AIR)
        ctx.vol[m], ctx.tis[m] = val, code
    m3 = np.broadcast_to(vb[:, :, None], g.shape)
    val3 = np.where(disc, 90.0, hu2[:, :, None])
    ctx.vol[m3] = np.broadcast_to(val3, g.shape)[m3]
    ctx.tis[m3] = BONE
    # sternum: anterior midline bar along the chest
    st_ap = cav["c_ap"] - cav["a_ap"] - 6.0
    st2 = ((g.axes[0][:, None] - st_ap) / 7.0) ** 2 + (dr / 14.0) ** 2 <= 1
    zr = (z > min(L["z_lo"] for L in A["lungs"].values()) + 10) & (z < A["lungs"]["right"]["z_hi"] - 20)
    m = st2[:, :, None] & zr[None, None, :]
    ctx.vol[m], ctx.tis[m] = hu["marrow"], BONE


# ----------------------------------------------------------------------------------------------- findings
def _choose_loc(rng, sides=_SIDES, lobes=None):
    side = sides[int(rng.integers(len(sides)))]
    if lobes is None:
        lobes, p = (("upper", "middle", "lower"), (0.4, 0.2, 0.4)) if side == "right" else (("upper", "lower"), (0.5, 0.5))
    else:
        lobes = [lb for lb in lobes if not (side == "left" and lb == "middle")]
        p = None
    return side, lobes[int(rng.choice(len(lobes), p=p))]


def _place(ctx: _Ctx, rng, side, lobe, radius, tries=25):
    """A point of lobe `lobe` whose ball of `radius` lies mostly in the lung field."""
    L = _effective_lung(ctx.A["lungs"][side])
    (z0, z1), (y0, y1) = _LOBES[lobe]
    best, best_f = None, -1.0
    for _ in range(tries):
        p = _lung_point(L, rng.uniform(z0, z1), rng.uniform(y0, y1), rng.uniform(-0.2, 0.5))
        f = ctx.lung_fraction(p, max(radius, ctx.g.min_r * 1.5))
        if f >= 0.75:
            return p
        if f > best_f:
            best, best_f = p, f
    return best


def _blobs(ctx, centers_radii, angle=0.0):
    """Union of ellipsoids -> list of (slices, q)."""
    out = []
    for c, r in centers_radii:
        e = _ellipsoid(ctx.g, c, r, angle)
        if e is not None:
            out.append(e)
    return out


def _extent(centers_radii):
    """Axial-plane extent (mm, larger first) of a union of ellipsoids."""
    lo = np.min([[c[0] - r[0], c[1] - r[1]] for c, r in centers_radii], 0)
    hi = np.max([[c[0] + r[0], c[1] + r[1]] for c, r in centers_radii], 0)
    ext = sorted((hi - lo).tolist(), reverse=True)
    return [int(round(e)) for e in ext]


def _cluster(ctx, rng, side, lobe, n, r_lo, r_hi, spread):
    c0 = np.asarray(_place(ctx, rng, side, lobe, r_hi))
    out = []
    for i in range(n):
        c = c0 if i == 0 else c0 + rng.uniform(-spread, spread, 3) * (1.0, 1.0, 0.7)
        r = rng.uniform(r_lo, r_hi)
        out.append((tuple(c), (r * rng.uniform(0.8, 1.1), r * rng.uniform(0.8, 1.1), r * rng.uniform(0.8, 1.2))))
    return out


def _pre_cardiomegaly(A, rng):
    A["heart"]["ctr"] = rng.uniform(0.58, 0.68)
    return {"ctr": _r(A["heart"]["ctr"], 2)}


def _pre_pericardial_effusion(A, rng):
    A["heart"]["peri_eff"] = rng.uniform(10, 22)
    return {"thickness_mm": int(round(A["heart"]["peri_eff"]))}


def _pre_mediastinum(A, rng):
    dw = rng.uniform(30, 50)
    z_car = A["trachea"]["z_carina"]
    A["halfgap_widen"] = (dw, z_car - 35.0, A["lungs"]["right"]["z_hi"] - 15.0)
    return {"width_mm": int(round(A["w_med"] + dw)), "widening_mm": int(round(dw))}


def _pre_atelectasis(A, rng):
    side, lobe = _choose_loc(rng, lobes=("lower", "lower", "lower", "middle", "upper"))
    raise_mm = rng.uniform(10, 20)
    A["lungs"][side]["z_lo"] += raise_mm
    return {"side": side, "lobe": lobe, "diaphragm_raise_mm": int(round(raise_mm))}


def _pre_pneumothorax(A, rng):
    side = _SIDES[int(rng.integers(2))]
    k = rng.uniform(0.62, 0.8)
    L = A["lungs"][side]
    L["collapse"] = k
    return {"side": side, "rim_mm": int(round(2 * L["rx"] * (1 - k))), "collapse": _r(k, 2)}


def _f_nodule(ctx, rng, P=None):
    n = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    items = []
    for i in range(n):
        side, lobe = _choose_loc(rng)
        d1 = rng.uniform(20, 40) if i == 0 else rng.uniform(10, 16)
        d2, d3 = d1 * rng.uniform(0.75, 1.0), d1 * rng.uniform(0.8, 1.0)
        c = _place(ctx, rng, side, lobe, d1 / 2)
        angle = rng.uniform(0, math.pi)
        e = _ellipsoid(ctx.g, c, (d2 / 2, d1 / 2, d3 / 2), angle)
        if e is not None:
            sl, q = e
            ctx.paint(sl, q <= 1.0, rng.uniform(25, 45), LESION, record="nodule", extra=ctx.lung_field[sl])
        items.append({"side": side, "lobe": lobe, "size_mm": [int(round(d1)), int(round(d2))]})
    big = items[0]
    return {"count": n, **big, "kind": "mass" if big["size_mm"][0] >= 30 else "nodule", "others": items[1:]}


def _soft_paint(ctx, blobs, target, name, edge=0.35):
    """Raise lung HU towards `target` with a soft edge, keeping denser voxels (vessels)."""
    for sl, q in blobs:
        w = np.clip((1.0 - np.sqrt(q)) / edge, 0.0, 1.0) * ctx.lung_field[sl]
        v = ctx.vol[sl]
        new = v + w * (target - v)
        m = (w > 0) & (new > v)
        v[m] = new[m]
        ctx.tis[sl][m & (w > 0.5)] = LESION
        ctx.record(name, sl, m)


def _f_ggo(ctx, rng, P=None):
    side, lobe = _choose_loc(rng)
    cr = _cluster(ctx, rng, side, lobe, 2, 18, 32, 15)
    target = rng.uniform(-520, -330)
    _soft_paint(ctx, _blobs(ctx, cr), target, "ggo")
    return {"side": side, "lobe": lobe, "size_mm": _extent(cr), "hu": int(round(target))}


def _f_consolidation(ctx, rng, P=None):
    side, lobe = _choose_loc(rng)
    cr = _cluster(ctx, rng, side, lobe, int(rng.integers(2, 4)), 16, 30, 18)
    hu = rng.uniform(20, 45)
    masks = []
    for sl, q in _blobs(ctx, cr):
        masks.append((sl, ctx.paint(sl, q <= 1.0, hu, LESION, record="consolidation", extra=ctx.lung_field[sl])))
    bronchogram = bool(rng.random() < 0.6)
    if bronchogram:
        c0 = np.asarray(cr[0][0])
        for _ in range(2):
            d = _unit(rng.normal(0, 1, 3)) * max(cr[0][1]) * 1.2
            e = _segment_dist(ctx.g, c0 - 0.3 * d, c0 + d, 3.0)
            if e is not None:
                sl, dist = e
                rec = ctx.records["consolidation"][sl]
                ctx.paint(sl, (dist <= max(2.5, 0.7 * ctx.g.min_r)) & rec, -900.0, LESION)
    return {"side": side, "lobe": lobe, "size_mm": _extent(cr), "hu": int(round(hu)), "air_bronchogram": bronchogram}


def _f_pneumonia(ctx, rng, P=None):
    sides = ["right", "left"] if rng.random() < 0.4 else [_SIDES[int(rng.integers(2))]]
    lobe = "lower" if rng.random() < 0.75 else "upper"
    n_total = 0
    for side in sides:
        cr = _cluster(ctx, rng, side, lobe, int(rng.integers(2, 5)), 9, 16, 25)
        n_total += len(cr)
        halo = [(c, tuple(1.7 * x for x in r)) for c, r in cr]
        _soft_paint(ctx, _blobs(ctx, halo), rng.uniform(-480, -380), "pneumonia", edge=0.5)
        core = rng.uniform(-40, 30)
        for sl, q in _blobs(ctx, cr):
            ctx.paint(sl, q <= 1.0, core, LESION, record="pneumonia", extra=ctx.lung_field[sl])
    return {"sides": sides, "lobe": lobe, "patches": n_total}


def _f_atelectasis(ctx, rng, P):
    side, lobe = P["side"], P["lobe"]
    L = _effective_lung(ctx.A["lungs"][side])
    h = np.asarray(ctx.A["hila"][side], np.float64)
    (z0, z1), (y0, y1) = _LOBES[lobe]
    t = np.asarray(_lung_point(L, (z0 + z1) / 2 - 0.05, (y0 + y1) / 2, 0.6))
    d = _unit(t - h)
    half = rng.uniform(0.35, 0.5)
    length = 1.8 * float(np.linalg.norm(t - h))
    g = ctx.g
    bx = g.box(h - length, h + length)
    sl, (a, r, s) = bx
    va, vr, vs = a - h[0], r - h[1], s - h[2]
    dist = np.sqrt(va * va + vr * vr + vs * vs) + 1e-6
    cosang = (va * d[0] + vr * d[1] + vs * d[2]) / dist
    cone = (cosang >= math.cos(half)) & (dist <= length) & (ctx.side[sl] == _SIDES.index(side) + 1)
    m = ctx.paint(sl, cone, rng.uniform(25, 45), LESION, record="atelectasis", extra=ctx.lung_field[sl])
    ext = int(round(float(dist[m].max()))) if m.any() else 0
    return {**P, "length_mm": ext}


def _pleural_rim(ctx, side, t):
    """Lung-field voxels of `side` within t mm of the chest wall (cavity surface), with their azimuth."""
    A, g = ctx.A, ctx.g
    cav = A["cav"]
    abar = 0.5 * (cav["a_ap"] + cav["a_rl"])
    rim2 = A["_rho_cav"] >= 1.0 - t / abar  # (H, W)
    apn = (g.axes[0][:, None] - cav["c_ap"]) / cav["a_ap"]
    rln = (g.axes[1][None, :] - A["mid"]) / cav["a_rl"]
    az2 = np.arctan2(apn, np.abs(rln))
    m = rim2[:, :, None] & ctx.lung_field & (ctx.side == _SIDES.index(side) + 1)
    return m, az2


def _f_effusion(ctx, rng, P=None):
    r = rng.random()
    sides = ["right"] if r < 0.4 else ["left"] if r < 0.65 else ["right", "left"]
    g, A = ctx.g, ctx.A
    depth = {}
    hu = rng.uniform(5, 20)
    for side in sides:
        dmm = rng.uniform(20, 55)
        depth[side] = int(round(dmm))
        L = _effective_lung(A["lungs"][side])
        f = _apex_f(L, g.axes[2])[None, :]  # (1, D)
        x = np.clip(np.abs(g.axes[1][:, None] - L["cx"]) / (L["rx"] * np.maximum(f, 1e-3)), 0, 1)  # (W, D)
        ap_post = L["cy"] + L["ry"] * f * (1.0 - x ** L["n"]) ** (1.0 / L["n"])  # posterior lung border (W, D)
        height = L["z_hi"] - L["z_lo"]
        gz = np.clip(1.0 - (g.axes[2] - L["z_lo"]) / (0.55 * height), 0.0, 1.0) ** 0.6  # (D,)
        level = ap_post - dmm * gz[None, :]
        m = (g.axes[0][:, None, None] > level[None, :, :]) & (gz[None, None, :] > 0)
        m &= ctx.lung_field & (ctx.side == _SIDES.index(side) + 1)
        full = (slice(None),) * 3
        ctx.paint(full, m, hu, FLUID, record="effusion")
        ctx.lung_field &= ~m
    return {"sides": sides, "depth_mm": depth, "hu": int(round(hu))}


def _f_pleural_plaque(ctx, rng, P=None):
    side = _SIDES[int(rng.integers(2))]
    wall = ("lateral", "posterior", "anterior")[int(rng.choice(3, p=(0.5, 0.35, 0.15)))]
    az0 = {"lateral": rng.uniform(-0.3, 0.3), "posterior": rng.uniform(0.6, 0.9), "anterior": rng.uniform(-0.9, -0.6)}[wall]
    calcified = bool(rng.random() < 0.7)
    t = rng.uniform(4, 8) if calcified else rng.uniform(6, 10)
    t = max(t, 0.8 * max(ctx.g.sp[:2]))
    A, g = ctx.A, ctx.g
    L = A["lungs"][side]
    zc = L["z_lo"] + rng.uniform(0.3, 0.6) * (L["z_hi"] - L["z_lo"])
    zh = rng.uniform(25, 45)
    daz = rng.uniform(0.35, 0.55)
    rim, az2 = _pleural_rim(ctx, side, t)
    win = (np.abs(az2 - az0) < daz)[:, :, None] & (np.abs(g.axes[2] - zc) < zh)[None, None, :]
    full = (slice(None),) * 3
    ctx.paint(full, rim & win, rng.uniform(40, 60), SOFT, record="pleural_plaque")
    n_plaques = 0
    if calcified:
        n_plaques = int(rng.integers(2, 5))
        for _ in range(n_plaques):
            a1, z1 = az0 + rng.uniform(-daz, daz), zc + rng.uniform(-zh, zh)
            pw = (np.abs(az2 - a1) < rng.uniform(0.12, 0.2))[:, :, None] & (np.abs(g.axes[2] - z1) < rng.uniform(8, 15))[None, None, :]
            ctx.paint(full, rim & win & pw, rng.uniform(350, 650), CALC, allowed=(SOFT,), record="pleural_plaque")
    return {"side": side, "wall": wall, "thickness_mm": int(round(t)), "calcified": calcified,
            "plaques": n_plaques, "extent_mm": int(round(2 * zh))}


def _peripheral_lines(ctx, rng, period, width, region):
    """Septal lines: planes along AP and RL every `period` mm, at least one voxel thick, inside `region`."""
    g = ctx.g
    off = rng.uniform(0, period, 2)
    lines = [np.abs(np.mod(g.axes[a] - off[a], period) - period / 2) >= period / 2 - max(width, g.sp[a]) / 2
             for a in range(2)]
    return region & (lines[0][:, None, None] | lines[1][None, :, None])


def _f_edema(ctx, rng, P=None):
    g, A = ctx.g, ctx.A
    dhu = rng.uniform(170, 240)
    m = ctx.lung_field & (ctx.tis == LUNG)
    grad = ((g.axes[0] - A["cav"]["c_ap"]) / A["cav"]["a_ap"] * 40.0)[:, None, None]
    full = (slice(None),) * 3
    ctx.paint(full, m, ctx.vol + dhu + grad, LESION, record="edema")
    period = rng.uniform(14, 20)
    lines = _peripheral_lines(ctx, rng, period, max(2.0, 0.5 * g.min_r), m & _peripheral_region_mask(ctx, 0.65))
    ctx.paint(full, lines, rng.uniform(-300, -200), LESION, record="edema")
    return {"delta_hu": int(round(dhu)), "septal_period_mm": int(round(period))}


def _peripheral_region_mask(ctx, frac):
    g, A = ctx.g, ctx.A
    out = np.zeros(g.shape, bool)
    for i, side in enumerate(_SIDES):
        L = _effective_lung(A["lungs"][side])
        rho = _superellipse(g, L["cy"], L["cx"], L["ry"], L["rx"], L["n"])
        f = _apex_f(L, g.axes[2])
        out |= (rho[:, :, None] >= frac * f[None, None, :]) & (ctx.side == i + 1)
    return out & ctx.lung_field


def _f_septal(ctx, rng, P=None):
    g, A = ctx.g, ctx.A
    lower = bool(rng.random() < 0.7)
    region = _peripheral_region_mask(ctx, 0.6) & np.isin(ctx.tis, (LUNG, LESION))
    if lower:
        zmax = max(L["z_lo"] + 0.6 * (L["z_hi"] - L["z_lo"]) for L in A["lungs"].values())
        region &= (g.axes[2] < zmax)[None, None, :]
    period = rng.uniform(18, 24)
    lines = _peripheral_lines(ctx, rng, period, 3.0, region)
    ctx.paint((slice(None),) * 3, lines, rng.uniform(-350, -250), LESION, record="septal")
    return {"distribution": "lower" if lower else "diffuse", "period_mm": int(round(period))}


def _f_mosaic(ctx, rng, P=None):
    g = ctx.g
    m = ctx.lung_field & (ctx.tis == LUNG)
    idx = np.nonzero(m)
    pts = [g.axes[a][idx[a]] for a in range(3)]
    field = np.zeros(len(idx[0]), np.float32)
    for _ in range(5):
        k = _unit(rng.normal(0, 1, 3)) * (2 * math.pi / rng.uniform(45, 80))
        field += np.cos(k[0] * pts[0] + k[1] * pts[1] + k[2] * pts[2] + rng.uniform(0, 2 * math.pi)).astype(np.float32)
    patch = np.tanh(1.5 * field)
    dense, lucent = rng.uniform(140, 190), rng.uniform(60, 80)
    delta = np.where(patch > 0, dense * patch, lucent * patch)
    ctx.vol[idx] += delta
    ctx.tis[idx] = np.where(np.abs(patch) > 0.3, LESION, ctx.tis[idx])
    rec = np.zeros(g.shape, bool)
    rec[idx] = np.abs(delta) > 20
    ctx.records["mosaic"] = rec
    return {"dense_delta_hu": int(round(dense)), "lucent_delta_hu": -int(round(lucent))}


def _f_emphysema(ctx, rng, P=None):
    n = int(rng.integers(5, 13))
    rmax = 0.0
    for _ in range(n):
        side = _SIDES[int(rng.integers(2))]
        r = max(rng.uniform(8, 18), 1.5 * ctx.g.min_r)
        rmax = max(rmax, r)
        c = _place(ctx, rng, side, "upper", r)
        e = _ellipsoid(ctx.g, c, (r, r, r * rng.uniform(0.8, 1.2)))
        if e is not None:
            sl, q = e
            ctx.paint(sl, q <= 1.0, rng.uniform(-990, -965), LESION, record="emphysema", extra=ctx.lung_field[sl])
    return {"count": n, "max_mm": int(round(2 * rmax)), "distribution": "upper lobes"}


def _f_fibrosis(ctx, rng, P=None):
    side, lobe = _choose_loc(rng, lobes=("upper", "upper", "upper", "lower", "middle"))
    c0 = np.asarray(_place(ctx, rng, side, lobe, 20.0))
    n = int(rng.integers(8, 15))
    hu = rng.uniform(-100, 0)
    for _ in range(n):
        p0 = c0 + rng.uniform(-20, 20, 3)
        p1 = p0 + _unit(rng.normal(0, 1, 3)) * rng.uniform(30, 60)
        r = max(rng.uniform(2.5, 3.5), 0.8 * ctx.g.min_r)
        e = _segment_dist(ctx.g, p0, p1, r)
        if e is not None:
            sl, d = e
            ctx.paint(sl, d <= r, hu, LESION, record="fibrosis", extra=ctx.lung_field[sl])
    return {"side": side, "lobe": lobe, "strands": n}


def _f_peribronchial(ctx, rng, P=None):
    w = rng.uniform(3, 5)
    hu = rng.uniform(0, 30)
    for p0, p1, r, _, level in ctx.A["bronchi"]:
        if level < 2:
            continue
        p0, p1 = np.asarray(p0), np.asarray(p1)
        if level == 3:
            p1 = p1 + _unit(p1 - p0) * 25.0
        rr = max(r, 0.5 * ctx.g.min_r)
        outer = max(rr + w, rr + 1.2 * ctx.g.min_r)
        e = _segment_dist(ctx.g, p0, p1, outer)
        if e is not None:
            sl, d = e
            ctx.paint(sl, (d <= outer) & (d > rr), hu, LESION, record="peribronchial", extra=ctx.lung_field[sl])
    return {"wall_mm": int(round(w)), "distribution": "both lungs"}


def _f_bronchiectasis(ctx, rng, P=None):
    side, lobe = _choose_loc(rng, lobes=("lower", "lower", "lower", "middle", "upper"))
    h = np.asarray(ctx.A["hila"][side])
    t = np.asarray(_place(ctx, rng, side, lobe, 15.0))
    root = h + 0.35 * (t - h)
    n = int(rng.integers(3, 6))
    rmax = 0.0
    for _ in range(n):
        r = max(rng.uniform(6, 10), 1.2 * ctx.g.min_r)
        rmax = max(rmax, r)
        wall = max(2.5, 0.8 * ctx.g.min_r)
        p1 = root + _unit(t - root + rng.normal(0, 15, 3)) * rng.uniform(40, 65)
        e = _segment_dist(ctx.g, root, p1, r + wall)
        if e is not None:
            sl, d = e
            ctx.paint(sl, d <= r + wall, 20.0, LESION, record="bronchiectasis", extra=ctx.lung_field[sl])
            ctx.paint(sl, d <= r, -1000.0, LESION, record="bronchiectasis", extra=ctx.lung_field[sl])
    return {"side": side, "lobe": lobe, "count": n, "diameter_mm": int(round(2 * rmax))}


def _stations(A):
    tr, mid = A["trachea"], A["mid"]
    z = tr["z_carina"]
    root = A["aorta"]["path"][0]
    return {
        "right paratracheal": (tr["ap"], mid - tr["r"] - 12.0, z + 22.0),
        "aortopulmonary window": (tr["ap"] - 6.0, mid + tr["r"] + 14.0, z + 6.0),
        "subcarinal": (tr["ap"] + 12.0, mid, z - 18.0),
        "prevascular": (root[0] - 18.0, mid - 2.0, z + 20.0),
        "right hilar": A["hila"]["right"],
        "left hilar": A["hila"]["left"],
    }


def _nodes(ctx, rng, n, lo, hi, name):
    st = _stations(ctx.A)
    keys = list(st)
    chosen = [keys[i] for i in sorted(rng.choice(len(keys), size=n, replace=False))]
    largest = 0.0
    for k in chosen:
        sa = rng.uniform(lo, hi)
        largest = max(largest, sa)
        c = np.asarray(st[k]) + rng.normal(0, 3, 3)
        e = _ellipsoid(ctx.g, c, (sa / 2, sa / 2 * rng.uniform(1.0, 1.2), sa / 2 * rng.uniform(1.1, 1.5)))
        if e is not None:
            sl, q = e
            ctx.paint(sl, q <= 1.0, rng.uniform(35, 50), SOFT, allowed=(MEDFAT, LUNG, PVESSEL, LESION), record=name)
    return chosen, int(round(largest))


def _f_mediastinum(ctx, rng, P):
    g, A = ctx.g, ctx.A
    _, z0, z1 = A["halfgap_widen"]
    tr = A["trachea"]
    med_ap = 0.5 * (tr["ap"] + A["aorta"]["path"][0][0])
    band = (np.abs(g.axes[1] - A["mid"])[None, :, None] < A["_halfgap"][None, None, :] + 2.0)
    band = band & (np.abs(g.axes[0] - med_ap)[:, None, None] < 45.0) & ((g.axes[2] > z0) & (g.axes[2] < z1))[None, None, :]
    ctx.paint((slice(None),) * 3, band, rng.uniform(32, 45), SOFT, allowed=(MEDFAT,), record="mediastinum")
    chosen, largest = _nodes(ctx, rng, int(rng.integers(2, 5)), 15, 28, "mediastinum")
    return {**P, "stations": chosen, "largest_node_mm": largest}


def _f_lymphadenopathy(ctx, rng, P=None):
    chosen, largest = _nodes(ctx, rng, int(rng.integers(3, 6)), 20, 32, "lymphadenopathy")
    return {"stations": chosen, "largest_node_mm": largest}


def _f_hiatal_hernia(ctx, rng, P=None):
    A, g = ctx.A, ctx.g
    sp_, mid = A["spine"], A["mid"]
    r = (rng.uniform(18, 28), rng.uniform(22, 32), rng.uniform(22, 32))
    c = (sp_["ap"] - sp_["r"] - r[0] - 4.0, mid + rng.uniform(0, 10), float(np.median(A["_zd"])) + 0.3 * r[2])
    allowed = (MEDFAT, LUNG, PVESSEL, HEART, SOFT, ABDOMEN, FLUID)
    e = _ellipsoid(g, c, r)
    if e is None:
        return {"size_mm": int(round(2 * max(r)))}
    sl, q = e
    ctx.paint(sl, q <= 1.0, 40.0, SOFT, allowed=allowed, record="hiatal_hernia")
    inner = q <= (1.0 - 4.0 / min(r)) ** 2
    a_box = g.axes[0][sl[0]][:, None, None]
    level = c[0] - 0.1 * r[0]
    ctx.paint(sl, inner & (a_box < level), -1000.0, LESION, allowed=(SOFT,))  # air anterior (non-dependent)
    ctx.paint(sl, inner & (a_box >= level), rng.uniform(5, 20), LESION, allowed=(SOFT,))  # fluid posterior
    return {"size_mm": int(round(2 * max(r[1], r[2]))), "contents": "air and fluid"}


def _f_aortic_calc(ctx, rng, P=None):
    A, g = ctx.A, ctx.g
    path, radii = A["aorta"]["path"], A["aorta"]["radii"]
    n = int(rng.integers(4, 9))
    th = max(3.0, 0.9 * g.min_r)
    for _ in range(n):
        i = int(rng.integers(1, len(path) - 1))
        p, rr = np.asarray(path[i]), radii[i]
        tau = _unit(np.asarray(path[i + 1]) - np.asarray(path[i - 1]))
        L = rng.uniform(15, 30)
        u_ = _unit(np.cross(tau, rng.normal(0, 1, 3)))
        e = _segment_dist(g, p - tau * L / 2, p + tau * L / 2, rr + 1.0)
        if e is None:
            continue
        sl, d = e
        a, r_, s = (g.axes[ax][sl[ax]] for ax in range(3))
        side = (a[:, None, None] - p[0]) * u_[0] + (r_[None, :, None] - p[1]) * u_[1] + (s[None, None, :] - p[2]) * u_[2]
        m = (d <= rr + 0.5) & (d >= rr - th) & (side > -0.2 * rr)
        ctx.paint(sl, m, rng.uniform(700, 1100), CALC, allowed=(GVESSEL, MEDFAT, LUNG, PVESSEL, ABDOMEN), record="aortic_calc")
    return {"plaques": n}


def _heart_surface_point(H, phi, zrel):
    """Point on the heart ellipsoid at short-axis angle phi (0 = posterior, -pi/2 = right) and height zrel."""
    v = np.array([math.cos(phi), math.sin(phi) * 0.6, zrel])
    v = v / np.linalg.norm(v)
    loc = np.array([v[0] * H["b"], v[1] * H["a"], v[2] * H["c"]]) * 0.98
    ct, st = math.cos(H["theta"]), math.sin(H["theta"])  # heart axes (ap', rl') -> (ap, rl)
    c = H["center"]
    return np.array([c[0] + ct * loc[0] - st * loc[1], c[1] + st * loc[0] + ct * loc[1], c[2] + loc[2]])


def _f_coronary_calc(ctx, rng, P=None):
    H, g = ctx.A["heart"], ctx.g
    n = int(rng.integers(3, 6))
    for _ in range(n):  # calcified coronary segments on the anterior / upper heart surface
        phi, z = rng.uniform(-math.pi, 0.2), rng.uniform(0.1, 0.6)
        p0 = _heart_surface_point(H, phi, z)
        p1 = _heart_surface_point(H, phi + rng.uniform(-0.5, 0.5), z + rng.uniform(-0.3, 0.1))
        r = max(rng.uniform(3.0, 4.5), 1.0 * g.min_r)
        e = _segment_dist(g, p0, p1, r)
        if e is not None:
            sl, d = e
            ctx.paint(sl, d <= r, rng.uniform(600, 1000), CALC, allowed=(HEART, MEDFAT, FLUID, LUNG, PVESSEL, GVESSEL),
                      record="coronary_calc")
    return {"segments": n}


def _f_fracture(ctx, rng, P=None):
    g, A = ctx.g, ctx.A
    R, cav, mid = A["ribs"], A["cav"], A["mid"]
    ii, jj, k, bone, az, sgn = _rib_geometry(g, A, A["_ribband2"])
    side = _SIDES[int(rng.integers(2))]
    s = _SIGN[side]
    L = A["lungs"][side]
    psi0 = rng.uniform(-0.6, 0.8)
    apn_site = math.sin(psi0)
    k_top = int(round((L["z_hi"] + 5.0 - R["slope"] * 0.9 - R["z0"]) / R["pitch"]))
    zlo, zhi = L["z_lo"] + 40.0, L["z_hi"] - 30.0
    ks = [kk for kk in range(k_top - 11, k_top + 1)
          if zlo < R["z0"] + kk * R["pitch"] + R["slope"] * apn_site < zhi and 3 <= k_top - kk + 1 <= 10]
    kf = ks[int(rng.integers(len(ks)))] if ks else k_top - 5
    gap = max(rng.uniform(12, 18), 1.5 * max(g.sp[:2]))
    frag = rng.uniform(20, 30)
    disp = max(rng.uniform(5, 10), 1.0 * max(g.sp[:2]))
    abar = 0.5 * (cav["a_ap"] + cav["a_rl"])
    on_side = (sgn == s)[:, None]
    this = bone & (k == kf) & on_side
    dpsi = (az - psi0)[:, None] * abar  # arc length (mm)
    end = 1.0 if rng.random() < 0.5 else -1.0
    gap_m = this & (np.abs(dpsi) < gap / 2)
    frag_m = this & (end * dpsi >= gap / 2) & (end * dpsi < gap / 2 + frag)
    rec = np.zeros(g.shape, bool)
    hu = A["hu"]
    # displaced fragment: move inward (towards the cavity centre)
    n_ap, n_rl = -math.sin(psi0), -s * math.cos(psi0)
    sh = [int(round(n_ap * disp / g.sp[0])), int(round(n_rl * disp / g.sp[1]))]
    if sh == [0, 0]:
        sh[int(abs(n_rl) > abs(n_ap))] = -1 if (n_rl if abs(n_rl) > abs(n_ap) else n_ap) < 0 else 1
    fi, fk = np.nonzero(frag_m)
    src = (ii[fi], jj[fi], fk)
    ctx.vol[src], ctx.tis[src] = hu["muscle"], MUSCLE
    rec[src] = True
    gi, gk = np.nonzero(gap_m)
    gsrc = (ii[gi], jj[gi], gk)
    ctx.vol[gsrc], ctx.tis[gsrc] = hu["muscle"], MUSCLE
    rec[gsrc] = True
    dst = (np.clip(src[0] + sh[0], 0, g.shape[0] - 1), np.clip(src[1] + sh[1], 0, g.shape[1] - 1), src[2])
    ctx.vol[dst], ctx.tis[dst] = hu["bone"], BONE
    rec[dst] = True
    # callus around the fracture site (in the soft tissue around the rib ends, not in the gap)
    rho_mid = 1.0 + 0.5 * A["body"]["rib_t"] / abar
    rr = (abs(math.cos(psi0)) ** cav["n"] + abs(math.sin(psi0)) ** cav["n"]) ** (-1.0 / cav["n"]) * rho_mid
    site = (cav["c_ap"] + cav["a_ap"] * rr * math.sin(psi0), mid + s * cav["a_rl"] * rr * math.cos(psi0),
            R["z0"] + kf * R["pitch"] + R["slope"] * math.sin(psi0) * rr)
    cr = max(rng.uniform(12, 16), 1.5 * g.min_r)
    e = _ellipsoid(g, site, (cr, cr, max(0.8 * cr, 0.8 * g.sp[2])))
    if e is not None:
        sl, q = e
        m = ctx.paint(sl, (q <= 1.0) & ~rec[sl], rng.uniform(400, 550), CALC, allowed=(MUSCLE, FAT, MEDFAT))
        rec[sl] |= m
    ctx.records["fracture"] = rec
    return {"side": side, "rib": int(k_top - kf + 1), "gap_mm": int(round(gap)), "displacement_mm": int(round(disp))}


def _f_device(ctx, rng, P=None):
    g, A = ctx.g, ctx.A
    kind = ("pacemaker", "port catheter", "central venous catheter")[int(rng.choice(3, p=(0.5, 0.35, 0.15)))]
    side = "left" if rng.random() < 0.75 else "right"
    if kind == "central venous catheter":
        side = "right" if rng.random() < 0.75 else "left"
    s = _SIGN[side]
    b, mid, H = A["body"], A["mid"], A["heart"]
    metal = rng.uniform(2500, 3000)
    rl_box = mid + s * 0.55 * b["a_rl"]
    x = abs(rl_box - b["c_rl"]) / b["a_rl"]
    ap_front = b["c_ap"] - b["a_ap"] * (1 - x ** b["n"]) ** (1 / b["n"])
    z_hi = A["lungs"][side]["z_hi"]
    svc = A["svc"]
    r_lead = max(1.5, g.min_r)
    allowed = tuple(c for c in range(18) if c != AIR)
    pts = []
    if kind in ("pacemaker", "port catheter"):
        rad = (5.0, 24.0, 22.0) if kind == "pacemaker" else (6.0, 13.0, 13.0)
        rad = (max(rad[0], g.min_r * 1.2), rad[1], max(rad[2], g.sp[2]))
        box = (ap_front + b["fat"] * 0.5 + 3.0, rl_box, z_hi - rng.uniform(5, 20))
        e = _ellipsoid(g, box, rad, power=4.0)
        if e is not None:
            sl, q = e
            ctx.paint(sl, q <= 1.0, metal, METAL, allowed=allowed, record="device")
        pts = [box, (box[0] + 15.0, mid + s * 45.0, box[2] + 10.0)]
    else:
        pts = [(svc["top"][0] - 5.0, svc["top"][1] - s * 10.0 if side == "right" else mid + 40.0, float(g.axes[2][-1]) + 5.0)]
    pts += [svc["top"], svc["bottom"]]
    if kind == "pacemaker":
        ct, st = math.cos(H["theta"]), math.sin(H["theta"])
        c = H["center"]
        ra = (c[0] + 0.55 * H["a"] * st * 0.3, c[1] - 0.55 * H["a"] * ct, c[2] + 0.1 * H["c"])
        rv = (c[0] - 0.6 * H["a"] * st, c[1] + 0.6 * H["a"] * ct, c[2] - 0.3 * H["c"])
        pts += [ra, rv]
    for p0, p1 in zip(pts[:-1], pts[1:]):
        e = _segment_dist(g, p0, p1, r_lead)
        if e is not None:
            sl, d = e
            ctx.paint(sl, d <= r_lead, metal, METAL, allowed=allowed, record="device")
    return {"kind": kind, "side": side}


_PRE = {"cardiomegaly": _pre_cardiomegaly, "pericardial_effusion": _pre_pericardial_effusion,
        "mediastinum": _pre_mediastinum, "atelectasis": _pre_atelectasis, "pneumothorax": _pre_pneumothorax}
_PAINT = {"nodule": _f_nodule, "ggo": _f_ggo, "consolidation": _f_consolidation, "pneumonia": _f_pneumonia,
          "atelectasis": _f_atelectasis, "effusion": _f_effusion, "pleural_plaque": _f_pleural_plaque,
          "edema": _f_edema, "septal": _f_septal, "mosaic": _f_mosaic, "emphysema": _f_emphysema,
          "fibrosis": _f_fibrosis, "peribronchial": _f_peribronchial, "bronchiectasis": _f_bronchiectasis,
          "mediastinum": _f_mediastinum, "lymphadenopathy": _f_lymphadenopathy, "hiatal_hernia": _f_hiatal_hernia,
          "aortic_calc": _f_aortic_calc, "coronary_calc": _f_coronary_calc, "fracture": _f_fracture,
          "device": _f_device}


# ----------------------------------------------------------------------------------------------- reports
def _loc(side, lobe, style):
    return f"{lobe} lobe of the {side} lung" if style == 0 else f"{side} {lobe} lobe"


def _join(nouns):
    return nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + " or " + nouns[-1]


def _ordinal(n):
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _sentences(kind, p, rng, style_set):
    """Abnormal sentence of finding `kind` with parameters p (phrasing chosen by rng)."""
    st = int(rng.integers(2))
    pick = lambda opts: opts[int(rng.integers(len(opts)))]  # noqa: E731
    if kind == "nodule":
        loc = _loc(p["side"], p["lobe"], st)
        a, b = p["size_mm"]
        what = "nodule" if style_set == "ctrate18" else p["kind"]
        if p["count"] > 1:
            return pick([f"Multiple solid nodules are seen in the lungs, the largest a {what} of about {a} mm x {b} mm in the {loc}.",
                         f"Multiple soft tissue nodules are seen, the largest a {what} of about {a} mm x {b} mm in the {loc}."])
        return pick([f"A soft tissue {what} of about {a} mm x {b} mm is seen in the {loc}.",
                     f"A solid {what} is seen in the {loc}, about {a} mm x {b} mm in size.",
                     f"A {what} shadow of about {a} mm x {b} mm can be seen in the {loc}."])
    if kind == "ggo":
        loc, (a, b) = _loc(p["side"], p["lobe"], st), p["size_mm"]
        return pick([f"A ground-glass opacity of about {a} mm x {b} mm is seen in the {loc}.",
                     f"A patchy ground-glass opacity is seen in the {loc}, about {a} mm x {b} mm.",
                     f"Ground-glass opacity of about {a} mm x {b} mm can be seen in the {loc}."])
    if kind == "consolidation":
        loc, (a, b) = _loc(p["side"], p["lobe"], st), p["size_mm"]
        br = ", with air bronchograms" if p["air_bronchogram"] else ""
        return pick([f"A patchy consolidation of about {a} mm x {b} mm is seen in the {loc}{br}.",
                     f"Consolidation is seen in the {loc}, about {a} mm x {b} mm{br}.",
                     f"A consolidation shadow of about {a} mm x {b} mm can be seen in the {loc}{br}."])
    if kind == "pneumonia":
        where = (f"{p['lobe']} lobes of both lungs" if len(p["sides"]) == 2 else _loc(p["sides"][0], p["lobe"], st))
        return pick([f"Patchy exudative shadows with blurred margins are seen in the {where}, consistent with pneumonia.",
                     f"Multiple patchy exudative shadows are seen in the {where}, suggesting pneumonia.",
                     f"Findings of pneumonia are seen in the {where}, with multiple patchy exudative shadows."])
    if kind == "atelectasis":
        loc = _loc(p["side"], p["lobe"], st)
        return pick([f"Atelectasis of the {loc} is seen, with a wedge-shaped dense shadow and volume loss.",
                     f"A wedge-shaped dense shadow with volume loss is seen in the {loc}, consistent with atelectasis.",
                     f"The {loc} shows atelectasis with volume loss."])
    if kind == "edema":
        return pick(["Both lungs show diffusely increased density with thickened interlobular septa, "
                     "consistent with interstitial edema.",
                     "Diffuse interstitial edema is seen in both lungs, with increased lung density and septal lines.",
                     "The lung fields show diffusely increased density and septal lines, suggesting interstitial pulmonary edema."])
    if kind == "cardiomegaly":
        c = f"{p['ctr']:.2f}"
        if style_set == "ctrate18":
            return pick([f"Cardiomegaly is seen, with a cardiothoracic ratio of about {c}.",
                         f"The heart is enlarged, consistent with cardiomegaly, with a cardiothoracic ratio of about {c}."])
        return pick([f"The heart shadow is enlarged, with a cardiothoracic ratio of about {c}, consistent with cardiomegaly.",
                     f"Cardiomegaly is seen, with a cardiothoracic ratio of about {c}.",
                     f"The heart is enlarged, with a cardiothoracic ratio of about {c}."])
    if kind == "mediastinum":
        w, n = p["width_mm"], p["largest_node_mm"]
        return pick([f"The mediastinum is widened to about {w} mm, with multiple enlarged lymph nodes up to {n} mm in short axis.",
                     f"Multiple enlarged lymph nodes up to {n} mm in short axis are seen in the mediastinum, "
                     "and the mediastinum is widened.",
                     f"The upper mediastinum is widened to about {w} mm with enlarged lymph nodes measuring up to {n} mm."])
    if kind == "lymphadenopathy":
        n = p["largest_node_mm"]
        return pick([f"Mediastinal lymphadenopathy is seen, with enlarged lymph nodes up to {n} mm in short axis.",
                     f"Enlarged lymph nodes consistent with lymphadenopathy are seen in the mediastinum, the largest about {n} mm."])
    if kind == "effusion":
        def amount(d):
            return "small" if d < 25 else "moderate" if d <= 45 else "large"
        if len(p["sides"]) == 2:
            r, l_ = p["depth_mm"]["right"], p["depth_mm"]["left"]
            return pick([f"Bilateral pleural effusions are seen, about {r} mm deep on the right and {l_} mm deep on the left.",
                         f"Pleural effusion is seen on both sides, about {r} mm deep on the right and {l_} mm on the left."])
        sd = p["sides"][0]
        d = p["depth_mm"][sd]
        return pick([f"A {amount(d)} pleural effusion is seen on the {sd} side, with a maximum depth of about {d} mm.",
                     f"There is a {amount(d)} amount of pleural effusion on the {sd} side, about {d} mm deep.",
                     f"A {sd} pleural effusion of about {d} mm depth is seen."])
    if kind == "pleural_plaque":
        w = f"{p['side']} {p['wall']} chest wall"
        if p["calcified"]:
            return pick([f"Pleural thickening with calcified plaques is seen along the {w}.",
                         f"Localized pleural thickening with calcification is seen along the {w}.",
                         f"There is pleural thickening of the {w}, with calcified pleural plaques."])
        return pick([f"Localized pleural thickening of about {p['thickness_mm']} mm is seen along the {w}.",
                     f"There is pleural thickening along the {w}, about {p['thickness_mm']} mm thick."])
    if kind == "pneumothorax":
        sd, r = p["side"], p["rim_mm"]
        return pick([f"A {sd} pneumothorax is seen, with a lateral air rim of about {r} mm and the {sd} lung compressed.",
                     f"Pneumothorax is seen on the {sd} side, with the lung compressed by an air rim of about {r} mm.",
                     f"There is a {sd}-sided pneumothorax with a lateral air rim of about {r} mm."])
    if kind == "fracture":
        n, sd, gp, dp = _ordinal(p["rib"]), p["side"], p["gap_mm"], p["displacement_mm"]
        return pick([f"A fracture of the {n} {sd} rib is seen, with a gap of about {gp} mm, displacement of about {dp} mm "
                     "and callus formation.",
                     f"The {n} {sd} rib shows a displaced fracture with callus, the fracture gap about {gp} mm.",
                     f"A displaced fracture with callus formation is seen in the {sd} {n} rib."])
    if kind == "device":
        sd = p["side"]
        if p["kind"] == "pacemaker":
            return pick([f"A pacemaker is seen in the {sd} anterior chest wall, with its lead extending into the right ventricle.",
                         f"A cardiac pacemaker is seen under the skin of the {sd} upper chest wall, and its lead reaches the heart.",
                         f"Changes after pacemaker implantation: the generator lies in the {sd} chest wall, the lead in the right ventricle."])
        if p["kind"] == "port catheter":
            return pick([f"An implanted port is seen in the {sd} anterior chest wall, with the catheter tip in the superior vena cava.",
                         f"A port catheter is seen in the {sd} chest wall, with its tip in the superior vena cava."])
        return pick([f"A central venous catheter is seen from the {sd} side, with its tip in the superior vena cava.",
                     "A central venous catheter is seen, with its tip in the superior vena cava."])
    if kind == "aortic_calc":
        return pick(["Calcified atherosclerotic plaques are seen in the wall of the thoracic aorta.",
                     "Calcification is seen in the aortic wall, with multiple calcified plaques."])
    if kind == "coronary_calc":
        return pick(["Calcification is seen in the coronary artery walls.",
                     f"Coronary artery calcification is seen, with {p['segments']} calcified segments along the coronary arteries."])
    if kind == "pericardial_effusion":
        return pick([f"Pericardial effusion is seen, with a thickness of about {p['thickness_mm']} mm.",
                     f"There is pericardial effusion about {p['thickness_mm']} mm thick around the heart."])
    if kind == "hiatal_hernia":
        return pick([f"A hiatal hernia is seen behind the heart, measuring about {p['size_mm']} mm and containing air and fluid.",
                     f"A hiatal hernia of about {p['size_mm']} mm with air and fluid is seen above the diaphragm."])
    if kind == "emphysema":
        return pick([f"Centrilobular emphysema is seen in the upper lobes of both lungs, with low-attenuation areas "
                     f"up to {p['max_mm']} mm.",
                     f"Emphysema with low-attenuation areas up to {p['max_mm']} mm is seen in the upper lobes."])
    if kind == "fibrosis":
        loc = _loc(p["side"], p["lobe"], st)
        return pick([f"Fibrotic sequelae with linear strands are seen in the {loc}.",
                     f"Linear fibrotic sequela is seen in the {loc}."])
    if kind == "mosaic":
        return pick(["A mosaic attenuation pattern is seen in both lungs.",
                     "Mosaic attenuation with patchy areas of differing density is seen in both lungs."])
    if kind == "peribronchial":
        return pick([f"Peribronchial thickening is seen in both lungs, with bronchial walls of about {p['wall_mm']} mm.",
                     "Peribronchial thickening is seen along the bronchi of both lungs."])
    if kind == "bronchiectasis":
        loc = _loc(p["side"], p["lobe"], st)
        return pick([f"Cylindrical bronchiectasis is seen in the {loc}, with dilated bronchi up to {p['diameter_mm']} mm in diameter.",
                     f"Bronchiectasis with bronchi up to {p['diameter_mm']} mm in diameter is seen in the {loc}."])
    if kind == "septal":
        where = "the lower zones of both lungs" if p["distribution"] == "lower" else "both lungs"
        return pick([f"Interlobular septal thickening is seen in {where}.",
                     f"Smooth interlobular septal thickening is noted in {where}."])
    raise KeyError(kind)


def _negative(nouns, rng, where=""):
    pick = [f"No {_join(nouns)} is seen{where}.", f"There is no {_join(nouns)}{where}.", f"No {_join(nouns)}{where}."]
    return pick[int(rng.integers(len(pick)))]


def _report(disease_set: str, labels: dict, F: dict, rng) -> str:
    """Templated report: fixed order of normal sentences, each replaced by abnormal ones when present."""
    kinds = _KIND[disease_set]
    pos = {kinds[d]: F[d] for d in kinds if labels.get(d)}
    pick = lambda opts: opts[int(rng.integers(len(opts)))]  # noqa: E731
    ab = lambda k: _sentences(k, pos[k], rng, disease_set)  # noqa: E731
    out = []

    def group(members, nouns, where=""):
        for k in members:
            if k in pos:
                out.append(ab(k))
        neg = [w for k, ws in nouns for w in ws if k not in pos]
        if neg:
            out.append(_negative(neg, rng, where))

    if disease_set == "chexpert14":
        out.append(pick(["Thorax is symmetrical.", "The thorax is symmetrical.", "The chest is symmetrical."]))
        out.append(ab("edema") if "edema" in pos else pick([
            "The lung window shows clear lung markings and good transparency of the lung fields.",
            "Bilateral lung markings are clear and natural, and the lung fields are well aerated.",
            "The lung markings of both lungs are clear, with good transparency of the lung fields."]))
        group(("nodule", "ggo", "consolidation", "pneumonia", "atelectasis"),
              (("nodule", ["nodule", "mass"]), ("consolidation", ["consolidation"]), ("ggo", ["ground-glass opacity"])),
              " in either lung")
        out.append(pick(["Bilateral pulmonary hila are not large.", "The bilateral hila are normal in size.",
                         "Both pulmonary hila are normal."]))
        out.append(ab("cardiomegaly") if "cardiomegaly" in pos else pick([
            "The heart shadow is not enlarged, and the great vessels are normal.",
            "The size and shape of the heart and great vessels are normal.",
            "The heart is normal in size, without cardiomegaly."]))
        out.append(ab("mediastinum") if "mediastinum" in pos else pick([
            "The mediastinum is not widened, and no enlarged lymph nodes are seen in it.",
            "No enlarged lymph node is found in the mediastinum, and the mediastinum is not widened.",
            "The mediastinum is centered and not widened, without enlarged lymph nodes."]))
        if not ({"effusion", "pleural_plaque"} & set(pos)):
            out.append(pick(["No pleural effusion or pleural thickening.", "No pleural effusion or pleural thickening is seen.",
                             "There is no pleural effusion or pleural thickening."]))
            if "pneumothorax" in pos:
                out.append(ab("pneumothorax"))
        else:
            group(("effusion", "pleural_plaque", "pneumothorax"),
                  (("effusion", ["pleural effusion"]), ("pleural_plaque", ["pleural thickening"])))
        out.append(ab("fracture") if "fracture" in pos else pick([
            "No rib fracture is seen.", "No obvious signs of rib fracture are found on both sides.",
            "The bony thorax is intact, with no fracture."]))
        out.append(ab("device") if "device" in pos else pick([
            "No catheter, tube or pacemaker is seen.", "No medical device is seen in the chest.",
            "There is no catheter or pacemaker."]))
    else:
        out.append(pick(["Trachea and both main bronchi are open.", "The trachea and both main bronchi are patent.",
                         "Trachea and both main bronchi are open, with no obstruction."]))
        group(("cardiomegaly", "pericardial_effusion", "aortic_calc", "coronary_calc"),
              (("cardiomegaly", ["cardiomegaly"]), ("pericardial_effusion", ["pericardial effusion"]),
               ("aortic_calc", ["aortic wall calcification"]), ("coronary_calc", ["coronary artery calcification"])))
        group(("lymphadenopathy", "hiatal_hernia"),
              (("lymphadenopathy", ["mediastinal lymphadenopathy"]), ("hiatal_hernia", ["hiatal hernia"])))
        group(("emphysema", "atelectasis", "nodule", "ggo", "fibrosis", "mosaic", "peribronchial", "consolidation",
               "bronchiectasis", "septal"),
              (("nodule", ["nodule"]), ("ggo", ["ground-glass opacity"]), ("consolidation", ["consolidation"]),
               ("emphysema", ["emphysema"])), " in either lung")
        out.append(ab("effusion") if "effusion" in pos else pick(["No pleural effusion is seen.", "No pleural effusion.",
                                                                  "There is no pleural effusion."]))
        out.append(pick(["Bone structures in the scan area are normal.", "The bony structures of the thorax are normal."]))
        out.append(ab("device") if "device" in pos else pick([
            "No catheter, tube or pacemaker is seen.", "No medical material is seen in the chest.",
            "There is no catheter or pacemaker."]))
    return " ".join(out)


# ----------------------------------------------------------------------------------------------- public API
def _names(disease_set: str) -> list[str]:
    if disease_set not in DISEASE_SETS or disease_set not in _KIND:
        raise ValueError(f"unknown disease set {disease_set!r}; choose one of {sorted(_KIND)}")
    return list(DISEASE_SETS[disease_set])


def _sampled(disease_set: str) -> list[str]:
    return [d for d in _names(disease_set) if d != NO_FINDING]


def _normalize_labels(labels: dict, disease_set: str) -> dict[str, int]:
    names = _names(disease_set)
    unknown = set(labels) - set(names)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not in disease set {disease_set!r}")
    out = {d: int(bool(labels.get(d, 0))) for d in names if d != NO_FINDING}
    if NO_FINDING in names:
        out[NO_FINDING] = int(not any(out.values()))
    return {d: out[d] for d in names}


def _default_spacing(volume_size):
    return tuple(float(f / n) for f, n in zip(FOV_MM, volume_size))


def make_case(rng: np.random.Generator, labels: dict, disease_set: str = "chexpert14", volume_size=(128, 128, 64),
              spacing=None, *, return_masks: bool = False):
    """One synthetic chest CT with the given findings.

    Args:
        rng: generator; exactly one integer is drawn from it (all streams derive from that integer).
        labels: {disease: 0|1}; missing diseases are 0, "no finding" is derived.
        volume_size: (H, W, D) voxels. spacing: mm (row, col, slice); default FOV 360x360x300 mm / volume_size.
        return_masks: add boolean (H, W, D) masks to info["masks"]: body, lung (aerated lung field before
            findings), heart, bone, and "finding:<disease>" for every painted finding.

    Returns:
        (hu int16 (H, W, D), spacing, report, info) with info = {"labels", "findings": {disease: params},
        "anatomy": {...}} (+ "masks").
    """
    volume_size = tuple(int(v) for v in volume_size)
    if len(volume_size) != 3 or min(volume_size) < 8:
        raise ValueError(f"volume_size must be 3 sizes >= 8, got {volume_size}")
    spacing = _default_spacing(volume_size) if spacing is None else tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing}")
    labels = _normalize_labels(labels, disease_set)
    kinds = _KIND[disease_set]
    base = int(rng.integers(0, 2**63 - 1))
    stream = lambda name: np.random.default_rng([base, _STREAMS.index(name)])  # noqa: E731
    g = _Grid(volume_size, spacing)
    A = _sample_anatomy(stream("anatomy"), g)
    present = {kinds[d]: d for d in kinds if labels[d]}
    rngs = {k: stream(k) for k in present}
    params: dict[str, dict] = {}
    for k in _PRE_KINDS:
        if k in present:
            params[k] = _PRE[k](A, rngs[k])
    _finish_anatomy(A)
    ctx = _Ctx(g, A)
    _render_anatomy(ctx)
    base_lung = ctx.lung_field.copy() if return_masks else None
    for k in _PAINT_ORDER:
        if k in present:
            params[k] = _PAINT[k](ctx, rngs[k], params.get(k))
    if "pneumothorax" in present and "pneumothorax" not in ctx.records:
        ctx.records["pneumothorax"] = np.zeros(g.shape, bool)
    findings = {d: params[k] for k, d in present.items()}
    report = _report(disease_set, labels, findings, stream("report"))

    # mild smoothing (partial volume), CT noise, HU range
    vol = ctx.vol
    for ax in range(3):
        if vol.shape[ax] >= 3:
            v = np.moveaxis(vol, ax, 0)
            sm = v.copy()
            sm[1:-1] = 0.25 * v[:-2] + 0.5 * v[1:-1] + 0.25 * v[2:]
            vol = np.moveaxis(sm, 0, ax)
    bloom = np.isin(ctx.tis, (METAL, CALC))  # metal and calcium bloom: keep their full value after smoothing
    if bloom.any():
        vol = np.where(bloom, np.maximum(vol, ctx.vol), vol)
    noise = stream("noise").standard_normal(g.shape, dtype=np.float32)
    vol = vol + noise * np.float32(A["hu"]["noise"])
    hu = np.clip(np.rint(vol), -1024, 3071).astype(np.int16)

    H = A["heart"]
    info = {
        "labels": labels,
        "findings": findings,
        "anatomy": {"body_width_mm": _r(2 * A["body"]["a_rl"]), "body_depth_mm": _r(2 * A["body"]["a_ap"]),
                    "thorax_width_mm": _r(2 * A["cav"]["a_rl"]), "cardiothoracic_ratio": _r(H["ctr"], 2),
                    "contrast": A["contrast"], "noise_hu": _r(A["hu"]["noise"])},
    }
    if return_masks:
        masks = {"body": ctx.tis != AIR, "lung": base_lung, "heart": ctx.tis == HEART, "bone": ctx.tis == BONE}
        for k, d in present.items():
            masks[f"finding:{d}"] = ctx.records.get(k, np.zeros(g.shape, bool))
        info["masks"] = masks
    return hu, spacing, report, info


def _resolve_prevalence(disease_set: str, prevalence) -> dict[str, float]:
    names = _sampled(disease_set)
    prev = dict(DEFAULT_PREVALENCE[disease_set])
    if prevalence is not None:
        if not isinstance(prevalence, dict):
            raise TypeError("prevalence must be a dict {disease: probability}")
        unknown = set(prevalence) - set(names)
        if unknown:
            raise ValueError(f"prevalence has diseases {sorted(unknown)} not sampled in {disease_set!r} "
                             f"(\"no finding\" is derived)")
        for d, p in prevalence.items():
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"prevalence of {d!r} must be in [0, 1], got {p}")
            prev[d] = float(p)
    return {d: prev[d] for d in names}


def sample_labels(rng: np.random.Generator, num_cases: int, disease_set: str = "chexpert14", prevalence=None,
                  min_positives: int = 0) -> list[dict[str, int]]:
    """Independent Bernoulli labels per disease; "no finding" = 1 exactly when nothing else is present.

    `prevalence` overrides the defaults per disease. `min_positives` forces at least that many positives
    (capped at num_cases) for every disease with prevalence > 0, so rare classes always occur.
    """
    names = _names(disease_set)
    prev = _resolve_prevalence(disease_set, prevalence)
    sampled = list(prev)
    p = np.array([prev[d] for d in sampled])
    Y = rng.random((num_cases, len(sampled))) < p[None, :]
    for j in range(len(sampled)):
        need = min(min_positives, num_cases) - int(Y[:, j].sum())
        if p[j] > 0 and need > 0:
            free = np.flatnonzero(~Y[:, j])
            Y[rng.choice(free, size=need, replace=False), j] = True
    rows = []
    for i in range(num_cases):
        row = {d: int(Y[i, j]) for j, d in enumerate(sampled)}
        rows.append(_normalize_labels(row, disease_set) if NO_FINDING in names else row)
    return rows


def _split_sizes(n: int, fractions) -> np.ndarray:
    f = np.asarray(fractions, np.float64)
    if f.ndim != 1 or len(f) != len(SPLITS) or (f < 0).any() or f.sum() <= 0:
        raise ValueError(f"split_fractions must be {len(SPLITS)} non-negative numbers, got {fractions}")
    f = f / f.sum()
    raw = f * n
    sizes = np.floor(raw).astype(int)
    for j in np.argsort(-(raw - sizes), kind="stable")[: n - sizes.sum()]:
        sizes[j] += 1
    for j in np.flatnonzero((f > 0) & (sizes == 0)):  # every used split gets at least one case
        if n >= int((f > 0).sum()):
            k = int(np.argmax(sizes))
            sizes[k] -= 1
            sizes[j] += 1
    return sizes


def _stratified_split(rows, names, fractions, rng) -> list[str]:
    """Iterative stratification (rarest label first); classes with >= 3 positives reach every used split."""
    n = len(rows)
    sizes = _split_sizes(n, fractions)
    used = sizes > 0
    Y = np.array([[row[d] for d in names] for row in rows], dtype=bool).reshape(n, len(names))  # (N, C)
    total = Y.sum(0)
    want = total[:, None] * (sizes / max(n, 1))[None, :]  # (C, S) positives still wanted per split
    room = sizes.astype(np.float64)  # cases still wanted per split
    pos = np.zeros((len(sizes), len(names)), np.int64)  # (S, C) positives placed
    assign = np.full(n, -1)
    order = rng.permutation(n)
    cover = total >= used.sum()

    def put(i, s):
        assign[i] = s
        want[:, s] -= Y[i]
        room[s] -= 1
        pos[s] += Y[i]

    while True:
        counts = Y[assign < 0].sum(0)
        if not counts.any():
            break
        c = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        for i in order:
            if assign[i] >= 0 or not Y[i, c]:
                continue
            lacks = used & (pos[:, c] == 0) & cover[c]
            open_ = used & (room > 0)
            cand = np.flatnonzero(lacks if lacks.any() else open_ if open_.any() else used)
            s = int(max(cand, key=lambda k: (want[c, k], room[k], -k)))
            put(i, s)
    for i in order:
        if assign[i] < 0:
            put(i, int(np.flatnonzero(used)[np.argmax(room[used])]))
    # repair: move a case into a split that lacks a class, without emptying another class elsewhere
    for c in np.flatnonzero(cover):
        for s in np.flatnonzero(used):
            if pos[s, c]:
                continue
            best = None
            for i in order:
                src = assign[i]
                if Y[i, c] and pos[src, c] >= 2 and all(pos[src, m] >= 2 or not cover[m] for m in np.flatnonzero(Y[i])):
                    if best is None or Y[i].sum() < Y[best].sum():
                        best = i
            if best is not None:
                pos[assign[best]] -= Y[best]
                room[assign[best]] += 1
                put(best, int(s))
    return [SPLITS[s] for s in assign]


def _synth_one(job):
    """Worker: generate and write case `i` (top-level for spawn-safe pickling)."""
    from ..volume_io import write_nifti

    i, case_id, labels, disease_set, volume_size, spacing, seed, out_dir = job
    rng = np.random.default_rng([seed, i])
    hu, sp, report, info = make_case(rng, labels, disease_set, volume_size, spacing)
    rel = f"volumes/{case_id}.nii.gz"
    write_nifti(Path(out_dir) / rel, hu, sp, dtype=np.int16)
    return {"id": case_id, "volume": rel, "report": report, "labels": info["labels"], "spacing": [_r(s, 4) for s in sp],
            "findings": info["findings"]}


def synthesize_benchmark(out_dir, num_cases: int = 300, seed: int = 0, disease_set: str = "chexpert14",
                         volume_size=(128, 128, 64), prevalence=None, split_fractions=(0.7, 0.1, 0.2),
                         num_workers: int = 1, progress: bool = True, spacing=None) -> Path:
    """Write OUT_DIR/volumes/<id>.nii.gz, OUT_DIR/manifest.jsonl and OUT_DIR/benchmark.json; return the manifest path.

    Manifest lines: {"id", "volume" (relative path), "report", "labels" (every disease of the set), "split",
    "spacing", "findings" (parameters per present disease)}. Splits are stratified so that every class with
    >= 3 positives has positives in every split. Output is identical for any `num_workers`.
    """
    from tqdm.auto import tqdm

    num_cases, seed = int(num_cases), int(seed)
    if num_cases < 1:
        raise ValueError("num_cases must be >= 1")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    volume_size = tuple(int(v) for v in volume_size)
    names = _names(disease_set)
    prev = _resolve_prevalence(disease_set, prevalence)
    out = Path(out_dir)
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = sample_labels(rng, num_cases, disease_set, prev, min_positives=min(3, num_cases // 10))
    splits = _stratified_split(labels, names, split_fractions, rng)
    width = max(5, len(str(num_cases - 1)))
    jobs = [(i, f"synth_{i:0{width}d}", labels[i], disease_set, volume_size, spacing, seed, str(out)) for i in range(num_cases)]
    records = []
    with tqdm(total=num_cases, desc="synthesize", disable=not progress) as bar:
        if num_workers > 1:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=int(num_workers), mp_context=ctx) as ex:
                for rec in ex.map(_synth_one, jobs, chunksize=max(1, min(8, num_cases // (4 * num_workers)))):
                    records.append(rec)
                    bar.update(1)
        else:
            for job in jobs:
                records.append(_synth_one(job))
                bar.update(1)
    manifest = out / "manifest.jsonl"
    with open(manifest, "w", encoding="utf-8") as fh:
        for rec, split in zip(records, splits):
            line = {"id": rec["id"], "volume": rec["volume"], "report": rec["report"], "labels": rec["labels"],
                    "split": split, "spacing": rec["spacing"], "findings": rec["findings"]}
            fh.write(json.dumps(line, sort_keys=False) + "\n")
    counts = {s: splits.count(s) for s in SPLITS}
    settings = {
        "generator": "dia_llama.data.synthetic", "generator_version": GENERATOR_VERSION, "seed": seed,
        "num_cases": num_cases, "disease_set": disease_set, "diseases": names, "volume_size": list(volume_size),
        "spacing": [_r(s, 4) for s in (spacing or _default_spacing(volume_size))], "prevalence": prev,
        "split_fractions": [float(f) for f in split_fractions], "split_counts": counts,
        "label_counts": {d: int(sum(r[d] for r in labels)) for d in names},
    }
    (out / "benchmark.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return manifest
