"""Dia-LLaMA's volume processor: CT volumes (paths or arrays) → `pixel_values` (B, C, H, W, D), and the resize kernels.

Hub remote-code file: depends only on numpy, torch and transformers (readers import their libraries lazily).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

from .volume_io import Volume, VolumeReadError, c_contiguous, read_volume

INTENSITY_MODES = ("minmax", "hu", "uint8")
RESAMPLE_MODES = ("trilinear", "nearest", "area")


class DiaLlamaVolumeProcessor(BaseImageProcessor):
    """Turns CT volumes (paths, arrays or tensors) into `pixel_values` (B, C, H, W, D) float32.

    Steps: read (NIfTI, NRRD/MHA, DICOM series folder, PNG/JPG slice folder, .npy/.npz, array) → resize to
    `volume_size` → intensity: `minmax` (per volume to [0, 1], the paper's), `hu` (clip to `hu_window`, then [0, 1]) or
    `uint8` (8-bit slices / 255) → replicate to `num_channels`.

    The HU window is for CT only. With `intensity_mode="hu"`, a volume that is known not to hold Hounsfield units
    (`Volume.kind == "other"`: DICOM MR/PT/..., or a NIfTI/NRRD without air-like values, see `dia_llama.volume_io`)
    follows `non_hu_intensity`: "minmax" (default: a warning, then that volume alone is scaled per volume to
    [0, 1], as in `minmax` mode), "window" (the HU window anyway) or "error" (a ValueError). Arrays (kind "unknown")
    are taken to be what the mode says.
    `read_options`: keyword arguments for `read_volume` when the processor reads a path (`allow_gaps`, `tilt`,
    `max_voxels`), e.g. `{"allow_gaps": True}`.
    """

    model_input_names = ["pixel_values"]
    NON_HU_INTENSITY_MODES = ("minmax", "window", "error")
    READ_OPTIONS = ("allow_gaps", "tilt", "max_voxels")

    def __init__(
        self,
        volume_size=(256, 256, 64),
        num_channels: int = 3,
        intensity_mode: str = "minmax",
        hu_window=(-1000.0, 1000.0),
        resample: str = "trilinear",
        non_hu_intensity: str = "minmax",
        read_options: Mapping | None = None,
        **kwargs,
    ):
        kwargs.pop("image_processor_type", None)
        super().__init__(**kwargs)
        self.volume_size = [int(v) for v in volume_size]
        self.num_channels = int(num_channels)
        self.intensity_mode = intensity_mode
        self.hu_window = [float(v) for v in hu_window]
        self.resample = resample
        self.non_hu_intensity = non_hu_intensity
        self.read_options = dict(read_options or {})
        if non_hu_intensity not in self.NON_HU_INTENSITY_MODES:
            raise ValueError(
                f"non_hu_intensity must be one of {self.NON_HU_INTENSITY_MODES}, got {non_hu_intensity!r}"
            )
        unknown = sorted(set(self.read_options) - set(self.READ_OPTIONS))
        if unknown:
            raise ValueError(f"read_options: unknown option(s) {unknown}; allowed: {list(self.READ_OPTIONS)}")
        if len(self.volume_size) != 3 or min(self.volume_size) < 1:
            raise ValueError(f"volume_size must be three positive ints (H, W, D), got {volume_size}")
        if intensity_mode not in INTENSITY_MODES:
            raise ValueError(f"intensity_mode must be one of {INTENSITY_MODES}, got {intensity_mode!r}")
        if resample not in RESAMPLE_MODES:
            raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {resample!r}")
        if not self.hu_window[0] < self.hu_window[1]:
            raise ValueError(f"hu_window must be (low, high) with low < high, got {hu_window}")

    def load(self, source, axis_order: str | None = None) -> Volume:
        """Read one scan into the canonical (H, W, D) layout."""
        if isinstance(source, Volume):
            return source
        return read_volume(source, axis_order=axis_order, **self.read_options)

    def resize(self, array: np.ndarray, rescale=None) -> torch.Tensor:
        """(H, W, D) → (H', W', D') float32 tensor at `volume_size`.

        `array` may be any (H, W, D) view of any real dtype, e.g. a Volume's stored int16 data: it is resized in its
        memory order and only the output is converted to float32. `rescale` (stored → real values, e.g. the NIfTI
        slope/intercept) is applied to the resized values (before the conversion for "nearest", which only picks
        values); every mode is linear, so this equals resizing the rescaled volume.
        """
        return torch.from_numpy(resize_volume(array, self.volume_size, self.resample, rescale))

    @staticmethod
    def _minmax(x: torch.Tensor) -> torch.Tensor:
        low, high = x.min(), x.max()
        return (x - low) / (high - low) if high > low else torch.zeros_like(x)

    def scale_intensity(self, x: torch.Tensor, kind: str, source: str, meta: Mapping | None = None) -> torch.Tensor:
        if self.intensity_mode == "minmax":
            return self._minmax(x)
        if self.intensity_mode == "hu":
            if kind == "uint8":
                raise ValueError(
                    f"{source}: holds 8-bit image slices, not Hounsfield units; use intensity_mode='uint8' or 'minmax'"
                )
            if kind == "other" and self.non_hu_intensity != "window":
                meta = meta or {}
                what = f"{meta['modality']} data" if meta.get("modality") else "data without air-like values"
                why = (
                    f"{what}, not Hounsfield units (kind 'other', from the "
                    f"{'Modality tag' if meta.get('kind_from') == 'modality' else 'value range'})"
                )
                if self.non_hu_intensity == "error":
                    raise ValueError(
                        f"{source}: {why}; the HU window is for CT. Use intensity_mode='minmax', or "
                        "non_hu_intensity='minmax' / 'window'"
                    )
                import warnings

                warnings.warn(
                    f"{source}: {why}: scaled per volume to [0, 1] (min-max) instead of the HU window "
                    "(non_hu_intensity='window' applies the window anyway, 'error' refuses such volumes)",
                    stacklevel=3,
                )
                return self._minmax(x)
            low, high = self.hu_window
            return (x.clamp(low, high) - low) / (high - low)
        if kind == "hu":
            raise ValueError(f"{source}: holds Hounsfield units, not 8-bit slices; use intensity_mode='hu' or 'minmax'")
        return x.clamp(0, 255) / 255.0

    def process_volume(self, volume: Volume) -> torch.Tensor:
        """One volume → (C, H, W, D) float32. Works on the values as read (`Volume.stored()`): the resize comes
        before any full-size float32 copy."""
        stored = volume.stored()
        array = np.asarray(stored.data)
        if array.ndim != 3:
            raise VolumeReadError(f"{volume.source}: expected a 3D volume (H, W, D), got shape {array.shape}")
        if array.dtype.kind not in "iub" and not np.isfinite(array).all():
            raise VolumeReadError(f"{volume.source}: contains NaN or infinite values")
        x = self.resize(array, stored.rescale if stored.is_scaled else None)
        x = self.scale_intensity(x, volume.kind, volume.source, volume.meta)
        return x.unsqueeze(0).expand(self.num_channels, -1, -1, -1)

    def __call__(self, volumes, return_tensors=None, axis_order: str | None = None, **kwargs) -> BatchFeature:
        return self.preprocess(volumes, return_tensors=return_tensors, axis_order=axis_order)

    def preprocess(self, volumes, return_tensors=None, axis_order: str | None = None, **kwargs) -> BatchFeature:
        """`volumes`: one scan or a list of scans (path, Volume, array or tensor)."""
        if not _is_batch(volumes):
            volumes = [volumes]
        if len(volumes) == 0:
            raise ValueError("no volumes given")
        pixel_values = torch.stack([self.process_volume(self.load(v, axis_order)) for v in volumes])  # (B, C, H, W, D)
        data = {"pixel_values": pixel_values if return_tensors == "pt" else pixel_values.numpy()}
        return BatchFeature(data=data, tensor_type=return_tensors if return_tensors != "pt" else None)

    def to_dict(self):
        out = super().to_dict()
        for key in ("_valid_kwargs_names", "_valid_processor_keys"):
            out.pop(key, None)
        return out


# ------------------------------------------------------------------------------------------------ volume resize
# The kernels below reproduce torch's `interpolate(mode="nearest-exact" | "trilinear", align_corners=False)` and
# `adaptive_avg_pool3d` (the same source indices and weights) on a volume of any dtype and memory layout, touching
# the full-size data as little as possible: axes are handled in memory order (flipped / transposed views cost
# nothing), and data is converted to float32 only once it has been reduced.


def _memory_order(a: np.ndarray):
    """(C-ordered base array, axis order, flipped axes): ``base`` holds ``a`` with negative strides undone and the
    axes ordered slowest first (no copy for a flipped / transposed view of a contiguous array)."""
    flips = [s < 0 for s in a.strides]
    b = a[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    order = sorted(range(a.ndim), key=lambda i: -b.strides[i])
    base = b.transpose(order)
    if not base.flags.c_contiguous:
        base = np.ascontiguousarray(base)
    return base, order, flips


def _nearest_exact_index(n_in: int, n_out: int) -> np.ndarray:
    """torch nearest-exact: min(floor((i + 0.5) · n_in / n_out), n_in − 1), in float32 like torch."""
    scale = np.float32(n_in) / np.float32(n_out)
    idx = np.floor((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def _linear_index(n_in: int, n_out: int):
    """torch linear interpolation, align_corners=False: (i0, i1, λ) with value = (1 − λ)·x[i0] + λ·x[i1].

    The source position (i + 0.5)·scale − 0.5 is rounded to float32 once (torch's kernel contracts it to an FMA),
    with scale = float32(n_in) / n_out; λ = position − i0 in float32."""
    scale = np.float64(np.float32(n_in) / np.float32(n_out))
    src = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = np.minimum(np.maximum(src - i0.astype(np.float32), np.float32(0)), np.float32(1))
    return i0, i1, lam


def _adaptive_bounds(n_in: int, n_out: int) -> list[tuple[int, int]]:
    """torch adaptive pooling windows [floor(i·n_in/n_out), ceil((i+1)·n_in/n_out))."""
    return [((i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)) for i in range(n_out)]


def _window_sums(x: np.ndarray, axis: int, bounds, acc) -> np.ndarray:
    """Sums of x over each window [a, b) along `axis` (axis 0: slice by slice; other axes: one gather per offset
    into the windows, which are short)."""
    lo = np.array([a for a, _ in bounds])
    width = np.array([b - a for a, b in bounds])
    if axis == 0:
        out = np.empty((len(bounds), *x.shape[1:]), acc)
        for i, (a, b) in enumerate(bounds):
            out[i] = x[a]
            for k in range(a + 1, b):
                np.add(out[i], x[k], out=out[i])
        return out
    out = np.take(x, lo, axis=axis).astype(acc)
    shape = [1] * x.ndim
    shape[axis] = -1
    for t in range(1, int(width.max())):
        valid = width > t
        term = np.take(x, np.where(valid, lo + t, lo), axis=axis)
        if not valid.all():
            term = term * valid.reshape(shape)
        out += term
    return out


def _area_integer(base: np.ndarray, n_out) -> np.ndarray:
    """adaptive_avg_pool3d window sums of C-ordered integer data, exact (integer arithmetic), separably: the slowest
    axis first (contiguous slice adds), then the reduced array."""
    bounds = [_adaptive_bounds(n, o) for n, o in zip(base.shape, n_out)]
    info = np.iinfo(base.dtype)
    largest = max(abs(int(info.min)), int(info.max))  # |largest window sum| ≤ this × the largest window
    for bd in bounds:
        largest *= max(b - a for a, b in bd)
    acc = np.int32 if largest < 2**31 else np.int64 if largest < 2**63 else np.float64
    x = base
    for axis in range(3):
        x = _window_sums(x, axis, bounds[axis], acc)
    return x


def _lerp_axis(x: np.ndarray, axis: int, i0, i1, lam) -> np.ndarray:
    """(1 − λ)·x[i0] + λ·x[i1] along `axis` → float32, rounded like torch's kernel: fma(x0, 1 − λ, λ·x1) (the
    float64 sum of an exact product and a float32, rounded once). Computed in chunks along axis 0 (one output slice
    at a time when interpolating along it) to keep the float64 temporaries small."""
    w0 = (np.float32(1) - lam).astype(np.float64)
    shape = list(x.shape)
    shape[axis] = len(i0)
    out = np.empty(shape, np.float32)

    def lerp(x0, x1, w0_, lam_, dst):
        c = x1.astype(np.float32)
        c *= lam_
        t = x0.astype(np.float64)
        t *= w0_
        t += c
        dst[...] = t

    if axis == 0:
        for k in range(len(i0)):
            lerp(x[i0[k]], x[i1[k]], w0[k], lam[k], out[k])
        return out
    wshape = [1] * x.ndim
    wshape[axis] = -1
    w0, lam = w0.reshape(wshape), lam.reshape(wshape)
    step = max(1, (1 << 18) // max(1, int(np.prod(shape[1:]))))
    for a in range(0, shape[0], step):
        xs = x[a : a + step]
        lerp(np.take(xs, i0, axis=axis), np.take(xs, i1, axis=axis), w0, lam, out[a : a + step])
    return out


def resize_volume(array: np.ndarray, size, mode: str, rescale=None) -> np.ndarray:
    """Resize an (H, W, D) array of any real dtype and layout to `size` → C-ordered float32, equal (to float
    rounding; "nearest" and integer "area" exactly) to torch's interpolation of the float32 volume."""
    array = np.asarray(array)
    size = tuple(int(v) for v in size)
    if tuple(array.shape) == size:  # no resampling, as before: the values themselves
        return c_contiguous(rescale(array) if rescale is not None else array, np.float32)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype.kind not in "iuf" or array.dtype.itemsize > 4 and array.dtype.kind == "f":
        array = array.astype(np.float32)  # bool / float64 → float32, as the conversion before resizing did
    base, order, flips = _memory_order(array)
    n_in = [array.shape[i] for i in order]
    n_out = [size[i] for i in order]
    inverse = [order.index(i) for i in range(3)]

    if mode == "nearest":
        idx = []
        for j, i in enumerate(order):
            k = _nearest_exact_index(n_in[j], n_out[j])
            idx.append(n_in[j] - 1 - k if flips[i] else k)
        picked = base[np.ix_(*idx)].transpose(inverse)  # gathered in the stored dtype
        return c_contiguous(rescale(picked) if rescale is not None else picked, np.float32)

    if mode == "area":
        if base.dtype.kind in "iu":
            out = _area_integer(base, n_out).transpose(inverse).astype(np.float32)
            for axis in range(3):  # torch divides the window sum by the window sizes, axis by axis
                counts = np.array([b - a for a, b in _adaptive_bounds(array.shape[axis], size[axis])], np.float32)
                shape = [1, 1, 1]
                shape[axis] = -1
                out /= (counts[::-1] if flips[axis] else counts).reshape(shape)  # windows are mirror-symmetric
        else:
            x = base if base.dtype == np.float32 and base.flags.writeable else base.astype(np.float32)
            out = F.adaptive_avg_pool3d(torch.from_numpy(x)[None, None], n_out)[0, 0].permute(inverse).numpy()
        flip_back = [i for i in range(3) if flips[i]]
    elif mode == "trilinear":
        # separable, in the order of torch's nested kernel (D innermost, then W, then H), so the rounding is the same;
        # the first pass reads only the ≤ 2·n_out slices it needs (in the stored dtype); flipped axes are handled by
        # mapping the source indices, never by moving the full-size data
        out, flip_back = base, []
        for axis in (2, 1, 0):
            j = order.index(axis)  # memory axis of the canonical axis
            if n_in[j] == n_out[j]:
                if flips[axis]:
                    flip_back.append(axis)
                continue
            i0, i1, lam = _linear_index(n_in[j], n_out[j])
            if flips[axis]:
                i0, i1 = n_in[j] - 1 - i0, n_in[j] - 1 - i1
            out = _lerp_axis(out, j, i0, i1, lam)
        out = out.transpose(inverse)
    else:
        raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {mode!r}")
    if flip_back:
        out = np.flip(out, axis=tuple(flip_back))
    return c_contiguous(rescale(out) if rescale is not None else out, np.float32)


def _is_batch(volumes) -> bool:
    """A list/tuple of scans (not a nested list that is itself an array)."""
    if isinstance(volumes, (list, tuple)):
        return len(volumes) == 0 or not isinstance(volumes[0], (int, float, list))
    return False


__all__ = ["DiaLlamaVolumeProcessor", "INTENSITY_MODES", "RESAMPLE_MODES", "resize_volume"]
