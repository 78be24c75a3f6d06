"""Rendering for `dia-llama app`: the three orthogonal slices of a volume, a CT window, and a disease's attention
blended over them. numpy + torch + Pillow only (no Gradio), so it is tested on its own.

Volumes are in the canonical (H, W, D) layout of `dia_llama.volume_io` (rows anterior→posterior, columns patient
right→left, slices inferior→superior). Views follow the radiological convention: axial with anterior up and the
patient's right on the image's left; coronal with superior up and the patient's right on the left; sagittal with
superior up and anterior on the left. Each view is resized to its physical aspect ratio (voxel spacing in mm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# (level, width) in HU. Windows change only the display, never the model's input.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
}
VIEWS = ("axial", "coronal", "sagittal")
SLICED_AXIS = {"axial": 2, "coronal": 0, "sagittal": 1}  # the canonical axis each view's slider moves along
DISPLAY_SIZE = 360  # pixels on the longest physical side of the volume


@dataclass
class DisplayVolume:
    """What the viewer draws: the stored values (H, W, D) with their rescale to real values, the spacing, and the
    intensity range used when the values are not Hounsfield units."""

    data: np.ndarray  # (H, W, D) stored values, any real dtype
    spacing: tuple[float, float, float]  # mm (row, col, slice)
    is_hu: bool
    rescale: Callable[[np.ndarray], np.ndarray] | None = None  # stored → real values (None: identity)
    value_range: tuple[float, float] = (0.0, 1.0)  # min-max display range of non-HU volumes

    @classmethod
    def from_stored(cls, data: np.ndarray, spacing, is_hu: bool, rescale=None) -> DisplayVolume:
        vol = cls(np.asarray(data), tuple(float(s) for s in spacing), is_hu, rescale)
        if not is_hu:  # robust range from a sample of up to ~1 M voxels
            step = max(1, int(round((vol.data.size / 1e6) ** (1 / 3))))
            sample = vol.values(vol.data[::step, ::step, ::step])
            low, high = np.percentile(sample, [0.5, 99.5])
            vol.value_range = (float(low), float(high) if high > low else float(low) + 1.0)
        return vol

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)

    def values(self, stored: np.ndarray) -> np.ndarray:
        """Stored values (any part of the volume) → real values as float32."""
        return np.asarray(self.rescale(stored) if self.rescale is not None else stored, dtype=np.float32)

    def middle(self) -> dict[str, int]:
        return {view: self.shape[SLICED_AXIS[view]] // 2 for view in VIEWS}


def canonical_slice(array: np.ndarray, view: str, index: int) -> np.ndarray:
    """The 2D slice of an (H, W, D) array that `view` shows at `index`, in canonical axis order: axial (H, W),
    coronal (W, D), sagittal (H, D)."""
    axis = SLICED_AXIS[view]
    index = int(np.clip(index, 0, array.shape[axis] - 1))
    return np.take(array, index, axis=axis)


def orient(plane: np.ndarray, view: str) -> np.ndarray:
    """A canonical slice (2D, or 2D + colour channels) → display orientation (rows top→bottom, columns left→right)."""
    if view == "axial":
        return plane  # anterior up, patient right on the left
    return np.swapaxes(plane, 0, 1)[::-1]  # superior up: coronal (D, W), sagittal (D, H)


def view_spacing(spacing, view: str) -> tuple[float, float]:
    """mm per pixel (row, column) of the oriented view."""
    row, col, sl = spacing
    return {"axial": (row, col), "coronal": (sl, col), "sagittal": (sl, row)}[view]


def window_to_unit(values: np.ndarray, window: str | None, volume: DisplayVolume) -> np.ndarray:
    """Real values → [0, 1] grey levels: a named HU window for CT, the volume's min-max range otherwise."""
    if volume.is_hu and window is not None:
        if window not in WINDOWS:
            raise ValueError(f"unknown window {window!r}; choose one of {list(WINDOWS)}")
        level, width = WINDOWS[window]
        low, high = level - width / 2, level + width / 2
    else:
        low, high = volume.value_range
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def attention_plane(grid: np.ndarray, view: str, index: int, volume_shape) -> np.ndarray:
    """The slice of a (h, w, d) patch-grid map trilinearly upsampled to `volume_shape` (align_corners=False, the
    grid cells spanning the volume), computed for one slice only: linear along the sliced axis at the slice's
    position, then bilinear in the plane. Equals ``canonical_slice(F.interpolate(grid, volume_shape,
    mode="trilinear"), view, index)`` without building the full-size map. Returns the canonical slice shape."""
    axis = SLICED_AXIS[view]
    n_grid, n_vol = grid.shape[axis], volume_shape[axis]
    position = max((index + 0.5) * n_grid / n_vol - 0.5, 0.0)  # source coordinate on the grid
    i0 = min(int(np.floor(position)), n_grid - 1)
    i1 = min(i0 + 1, n_grid - 1)
    lam = position - i0
    plane = (1 - lam) * np.take(grid, i0, axis=axis) + lam * np.take(grid, i1, axis=axis)  # 2D grid slice
    out_shape = [n for a, n in enumerate(volume_shape) if a != axis]
    plane_t = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))[None, None]
    return F.interpolate(plane_t, size=out_shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def heat_colors(weights: np.ndarray) -> np.ndarray:
    """[0, 1] weights → RGB in [0, 1] on a black-body-like scale (dark red → red → yellow → white)."""
    w = np.clip(weights, 0.0, 1.0)[..., None]
    ramps = np.array([[0.35, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.85, 0.0], [1.0, 1.0, 0.9]], np.float32)
    stops = np.linspace(0.0, 1.0, len(ramps), dtype=np.float32)
    channels = [np.interp(w[..., 0], stops, ramps[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).astype(np.float32)


def render_view(volume: DisplayVolume, view: str, index: int, window: str | None = "lung",
                attention: np.ndarray | None = None, opacity: float = 0.55, crosshair: dict | None = None,
                size: int = DISPLAY_SIZE) -> np.ndarray:
    """One view as an RGB uint8 image (rows, cols, 3) at its physical aspect ratio.

    `attention`: a (h, w, d) patch-grid map scaled to [0, 1] (e.g. divided by its maximum); it is upsampled to the
    volume and blended in with weight `opacity` · value. `crosshair`: {view: index} of the other two views, drawn
    as thin lines where those slices cut this one."""
    grey = window_to_unit(volume.values(canonical_slice(volume.data, view, index)), window, volume)
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)  # (a, b, 3)
    if attention is not None:
        heat = np.clip(attention_plane(attention, view, index, volume.shape), 0.0, 1.0)
        alpha = (opacity * heat)[..., None]
        rgb = (1 - alpha) * rgb + alpha * heat_colors(heat)
    image = orient(rgb, view)
    if crosshair:
        image = _draw_crosshair(image, view, crosshair, volume.shape)
    return _resize_physical(image, view_spacing(volume.spacing, view), volume, size)


def _draw_crosshair(image: np.ndarray, view: str, crosshair: dict, shape) -> np.ndarray:
    """Dashed lines at the other views' slices (in display orientation)."""
    image = image.copy()
    color = np.array([0.2, 0.8, 1.0], np.float32)
    rows, cols = image.shape[:2]
    dashes_r, dashes_c = (np.arange(rows) // 3) % 2 == 0, (np.arange(cols) // 3) % 2 == 0
    lines = {  # view → [(other view, "row" | "col", display index from the other view's slice index)]
        "axial": [("coronal", "row", lambda i: i), ("sagittal", "col", lambda i: i)],
        "coronal": [("axial", "row", lambda i: shape[2] - 1 - i), ("sagittal", "col", lambda i: i)],
        "sagittal": [("axial", "row", lambda i: shape[2] - 1 - i), ("coronal", "col", lambda i: i)],
    }[view]
    for other, kind, to_display in lines:
        if other not in crosshair:
            continue
        k = int(to_display(int(crosshair[other])))
        if kind == "row" and 0 <= k < rows:
            image[k, dashes_c] = 0.5 * image[k, dashes_c] + 0.5 * color
        elif kind == "col" and 0 <= k < cols:
            image[dashes_r, k] = 0.5 * image[dashes_r, k] + 0.5 * color
    return image


def _resize_physical(image: np.ndarray, pixel_mm: tuple[float, float], volume: DisplayVolume, size: int) -> np.ndarray:
    """Float RGB [0, 1] → uint8, resized so that every view shares one mm-per-pixel scale with the volume's longest
    physical side at `size` pixels."""
    from PIL import Image

    extent = max(n * s for n, s in zip(volume.shape, volume.spacing))
    mm_per_pixel = extent / size
    rows = max(1, int(round(image.shape[0] * pixel_mm[0] / mm_per_pixel)))
    cols = max(1, int(round(image.shape[1] * pixel_mm[1] / mm_per_pixel)))
    out = Image.fromarray(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8))
    return np.asarray(out.resize((cols, rows), Image.Resampling.BILINEAR))


__all__ = [
    "DISPLAY_SIZE",
    "DisplayVolume",
    "SLICED_AXIS",
    "VIEWS",
    "WINDOWS",
    "attention_plane",
    "canonical_slice",
    "heat_colors",
    "orient",
    "render_view",
    "view_spacing",
    "window_to_unit",
]
