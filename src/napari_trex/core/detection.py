"""Detection: which pixels belong to animals, grouped into blobs with position, size, angle.

Per frame: difference to the background, threshold, optional closing/dilation, connected
components (``scipy.ndimage.label``, 8-connected), region properties from image moments
(vectorised over all blobs with ``np.bincount``: no Python loop over blobs), size filter in
cm² (``blob_size_ranges`` via ``cm_per_pixel``). Blobs larger than one animal keep their
difference pixels, so the tracker can split them later when several animals are expected
inside (TRex splits at tracking time, where the predictions say how many animals merged).

Detection is embarrassingly parallel: :func:`detect_video` hands chunks of frames, aligned to
keyframes, to dask (threads, processes or a dask.distributed cluster); each task decodes its
chunk sequentially and returns a small columnar table. Memory is bounded by the chunk size.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import Cancelled, NapariTrexError, VideoError
from .settings import Settings
from .video import Video, rgb_to_grey

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
SPLIT_STEP = 3  # split_blob tries at least every 3rd grey value first (see there) ...
SPLIT_COARSE_LEVELS = 10  # ... and at most about 10 levels before refining
SPECK_LINE = 3  # _Lines leaves out isolated lines of up to 3 pixels when blobs that small are dropped

COLUMNS = ("frame", "x", "y", "area", "angle", "major", "minor", "intensity", "y0", "x0", "y1", "x1",
           "blob_id", "split")
_DTYPES = {"frame": np.int32, "area": np.int32, "y0": np.int32, "x0": np.int32, "y1": np.int32,
           "x1": np.int32, "blob_id": np.int64, "split": bool}


@dataclass(frozen=True)
class DetectionParams:
    """Detection settings resolved for one video (pixels, not cm)."""

    threshold: int
    absolute: bool = True
    use_difference: bool = True
    size_ranges_px: tuple[tuple[float, float], ...] = ((0.0, np.inf),)
    prefilter_px: tuple[float, float] = (3.0, np.inf)
    closing_size: int = 0
    dilation_size: int = 0
    crop: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 kept
    include: tuple[np.ndarray, ...] = ()
    ignore: tuple[np.ndarray, ...] = ()
    intensity_range: tuple[int, int] | None = None
    keep_pixels_above_px: float = np.inf  # blobs this large keep their pixels for splitting
    analysis_range: tuple[int, int] = (-1, -1)  # first, last frame analysed (-1: the video's)

    @property
    def min_area_px(self) -> float:
        return min(lo for lo, _ in self.size_ranges_px)

    @property
    def max_area_px(self) -> float:
        return max(hi for _, hi in self.size_ranges_px)

    @classmethod
    def from_settings(cls, settings: Settings, frame_shape: tuple[int, ...]) -> DetectionParams:
        height, width = frame_shape[:2]
        px_area = settings.pixel_size_cm(width) ** 2  # cm² per pixel
        ranges = tuple((lo / px_area, hi / px_area) for lo, hi in settings.blob_size_ranges)
        lo_pre, hi_pre = settings.blob_size_range
        left, top, right, bottom = settings.crop_offsets
        crop = None
        if any(settings.crop_offsets):
            crop = (int(left * width), int(top * height), int(round((1 - right) * width)),
                    int(round((1 - bottom) * height)))
        smallest = min(lo for lo, _ in ranges)
        largest = max(hi for _, hi in ranges)
        return cls(
            threshold=max(settings.threshold, settings.track_threshold),
            absolute=settings.enable_absolute_difference,
            use_difference=settings.enable_difference,
            size_ranges_px=ranges,
            prefilter_px=(max(1.0, lo_pre / px_area, 0.5 * smallest), hi_pre / px_area),
            closing_size=settings.closing_size if settings.use_closing else 0,
            dilation_size=settings.dilation_size,
            crop=crop,
            include=tuple(np.asarray(p, float) for p in settings.track_include),
            ignore=tuple(np.asarray(p, float) for p in settings.track_ignore),
            intensity_range=None if settings.track_intensity_range == (-1, -1)
            else tuple(settings.track_intensity_range),
            keep_pixels_above_px=min(largest, 1.25 * (smallest + largest) / 2
                                     if np.isfinite(largest) else np.inf),
            analysis_range=tuple(settings.analysis_range),
        )


@dataclass
class Detections:
    """All blobs of a video, one row each, plus ``offsets``: rows of frame f are
    ``offsets[f]:offsets[f+1]``. ``pixels`` maps a row to ``(y0, x0, difference crop)`` for
    blobs big enough to hold several animals (masked: 0 outside the blob)."""

    columns: dict[str, np.ndarray]
    offsets: np.ndarray
    pixels: dict[int, tuple[int, int, np.ndarray]] = field(default_factory=dict)
    undecodable: int = 0  # frames at the end of the video that could not be decoded (empty here)

    @property
    def n_frames(self) -> int:
        return len(self.offsets) - 1

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def rows(self, frame: int) -> slice:
        return slice(int(self.offsets[frame]), int(self.offsets[frame + 1]))

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def empty(cls, n_frames: int = 0) -> Detections:
        return cls({c: np.empty(0, _DTYPES.get(c, np.float32)) for c in COLUMNS},
                   np.zeros(n_frames + 1, np.int64))

    @classmethod
    def from_frames(cls, per_frame: list[dict[str, np.ndarray]],
                    pixels: list[dict[int, tuple[int, int, np.ndarray]]] | None = None) -> Detections:
        """Stack per-frame tables (frame numbers inside) in frame order."""
        counts = np.array([len(t["x"]) for t in per_frame], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        columns = {c: np.concatenate([t[c] for t in per_frame]).astype(_DTYPES.get(c, np.float32))
                   if per_frame else np.empty(0, _DTYPES.get(c, np.float32)) for c in COLUMNS}
        merged: dict[int, tuple[int, int, np.ndarray]] = {}
        for k, frame_pixels in enumerate(pixels or []):
            merged.update({int(offsets[k]) + row: crop for row, crop in frame_pixels.items()})
        return cls(columns, offsets, merged)

    @classmethod
    def concatenate(cls, parts: list[Detections]) -> Detections:
        """Join consecutive chunks (each covering its own frames, in order)."""
        if not parts:
            return cls.empty()
        columns = {c: np.concatenate([p.columns[c] for p in parts]) for c in COLUMNS}
        offsets = [np.zeros(1, np.int64)]
        pixels: dict[int, tuple[int, int, np.ndarray]] = {}
        base = 0
        for p in parts:
            offsets.append(p.offsets[1:] + base)
            pixels.update({row + base: crop for row, crop in p.pixels.items()})
            base += len(p)
        return cls(columns, np.concatenate(offsets), pixels, sum(p.undecodable for p in parts))

    def save(self, path: Any) -> None:
        from .io import atomic_path

        with atomic_path(path) as tmp:
            rows = np.array(sorted(self.pixels), dtype=np.int64)
            crops = [self.pixels[r] for r in rows]
            np.savez_compressed(
                tmp, offsets=self.offsets, pixel_rows=rows,
                pixel_origin=np.array([(y, x) for y, x, _ in crops], np.int64).reshape(-1, 2),
                pixel_shape=np.array([c.shape for _, _, c in crops], np.int64).reshape(-1, 2),
                pixel_data=np.concatenate([c.ravel() for _, _, c in crops]) if crops
                else np.empty(0, np.uint8),
                **{f"col_{c}": v for c, v in self.columns.items()})

    @classmethod
    def load(cls, path: Any) -> Detections:
        with np.load(path) as data:
            columns = {c: data[f"col_{c}"] for c in COLUMNS}
            pixels = {}
            flat = data["pixel_data"]
            start = 0
            for row, (y, x), (h, w) in zip(data["pixel_rows"], data["pixel_origin"], data["pixel_shape"]):
                pixels[int(row)] = (int(y), int(x), flat[start: start + h * w].reshape(h, w))
                start += h * w
            return cls(columns, data["offsets"], pixels)


class StreamedDetections:
    """Detections arriving chunk by chunk (consecutive ranges of frames, in order) from
    ``futures`` (``concurrent.futures``) while tracking reads them: :func:`track` waits for a
    chunk only when it reaches its first frame."""

    def __init__(self, ranges: list[tuple[int, int]], futures: list[Any]) -> None:
        self.ranges = ranges
        self.futures = futures
        self.n_frames = ranges[-1][1] if ranges else 0
        self._chunks: list[Detections] = []
        self._first_row: list[int] = []
        self._joined: Detections | None = None
        self.pixels = _StreamedPixels(self)

    def _chunk(self, frame: int) -> int:
        k = len(self._chunks) - 1
        while k < 0 or frame >= self.ranges[k][1]:
            k += 1
            if k == len(self._chunks):
                chunk = self.futures[k].result()  # waits; re-raises what the worker raised
                self._first_row.append(self._first_row[-1] + len(self._chunks[-1])
                                       if self._chunks else 0)
                self._chunks.append(chunk)
        while frame < self.ranges[k][0]:
            k -= 1
        return k

    def frame(self, frame: int) -> tuple[Detections, int, slice]:
        """The chunk holding ``frame``, the global row of the chunk's first row, the chunk's
        rows of the frame."""
        k = self._chunk(frame)
        return self._chunks[k], self._first_row[k], self._chunks[k].rows(frame - self.ranges[k][0])

    def joined(self) -> Detections:
        """All chunks as one :class:`Detections` (waits for the last)."""
        if self._joined is None:
            if self.n_frames:
                self._chunk(self.n_frames - 1)
            self._joined = Detections.concatenate(self._chunks)
        return self._joined


class _StreamedPixels:
    def __init__(self, owner: StreamedDetections) -> None:
        self.owner = owner

    def _find(self, row: int) -> tuple[Detections, int] | None:
        starts = self.owner._first_row
        k = bisect.bisect_right(starts, row) - 1
        if k < 0:
            return None
        return self.owner._chunks[k], row - starts[k]

    def __contains__(self, row: int) -> bool:
        found = self._find(row)
        return found is not None and found[1] in found[0].pixels

    def __getitem__(self, row: int) -> tuple[int, int, np.ndarray]:
        chunk, local = self._find(row)
        return chunk.pixels[local]


def absolute_difference(frame: np.ndarray, background: np.ndarray) -> np.ndarray:
    """|background - frame| in uint8 (no overflow), greyscale whatever the frame is."""
    if frame.ndim == 3:
        frame = rgb_to_grey(frame)
    return np.maximum(frame, background) - np.minimum(frame, background)


def difference_image(frame: np.ndarray, background: np.ndarray, params: DetectionParams) -> np.ndarray:
    """How different each pixel is from the background (uint8), as TRex thresholds it."""
    if not params.use_difference:
        return rgb_to_grey(frame) if frame.ndim == 3 else frame
    if params.absolute:
        return absolute_difference(frame, background)
    if frame.ndim == 3:
        frame = rgb_to_grey(frame)
    return np.where(background > frame, background - frame, 0).astype(np.uint8)


def ellipse_radius(x: np.ndarray, y: np.ndarray, cx: np.ndarray, cy: np.ndarray,
                   angle: np.ndarray, major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """How far points (x, y) lie from a blob's centre in units of its ellipse (half its major
    axis along ``angle``, half its minor axis across; at least 1 px each): 1 on the outline,
    below 1 inside. Broadcasts over points and blobs."""
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    u, v = dx * c + dy * s, -dx * s + dy * c  # along the major, the minor axis
    return np.hypot(u / np.maximum(major / 2, 1.0), v / np.maximum(minor / 2, 1.0))


def region_properties(labels: np.ndarray, n: int, diff: np.ndarray, y_offset: int = 0,
                      x_offset: int = 0) -> dict[str, np.ndarray]:
    """Area, centroid, orientation, axes, mean difference, bounding box and TRex blob id of
    labels ``1..n`` (index k-1 for label k), vectorised over all blobs with ``np.bincount``."""
    flat = np.flatnonzero(labels)
    return _properties(flat, labels.ravel()[flat], n, diff.ravel()[flat], labels.shape[1],
                       y_offset, x_offset)


def _properties(flat: np.ndarray, lab: np.ndarray, n: int, values: np.ndarray, width: int,
                y_offset: int = 0, x_offset: int = 0) -> dict[str, np.ndarray]:
    """:func:`region_properties` from the blobs' pixels only: raster indices ``flat`` (in raster
    order), their labels ``lab`` (1..n) and difference ``values``."""
    ys, xs = np.divmod(flat, width)
    area = np.bincount(lab, minlength=n + 1).astype(np.float64)
    safe = np.maximum(area, 1)
    xf, yf = xs.astype(np.float64), ys.astype(np.float64)  # float64: squares of 1920 px add up
    cx = np.bincount(lab, xf, n + 1) / safe
    cy = np.bincount(lab, yf, n + 1) / safe
    mu20 = np.bincount(lab, xf * xf, n + 1) / safe - cx ** 2
    mu02 = np.bincount(lab, yf * yf, n + 1) / safe - cy ** 2
    mu11 = np.bincount(lab, xf * yf, n + 1) / safe - cx * cy
    angle = 0.5 * np.arctan2(2 * mu11, mu20 - mu02)  # major axis vs x axis (y down), (-pi/2, pi/2]
    common = np.sqrt(np.maximum(((mu20 - mu02) / 2) ** 2 + mu11 ** 2, 0))
    major = 4 * np.sqrt(np.maximum((mu20 + mu02) / 2 + common, 0))
    minor = 4 * np.sqrt(np.maximum((mu20 + mu02) / 2 - common, 0))
    intensity = np.bincount(lab, values.astype(np.float64), n + 1) / safe
    # bounding boxes: group pixels by label (stable sort keeps raster order inside a label)
    # (labels below 256 as bytes: numpy sorts those by radix, in under half the time)
    order = np.argsort(lab.astype(np.uint8) if n < 256 else lab, kind="stable")
    counts = area[1:].astype(np.int64)
    starts = np.zeros(n, np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    y0 = np.zeros(n + 1, np.int64)
    y1 = np.zeros(n + 1, np.int64)
    x0 = np.zeros(n + 1, np.int64)
    x1 = np.zeros(n + 1, np.int64)
    # TRex's deterministic blob id: (mid-x of the first line) << 20 | (its y & 0xFFF) << 8 |
    # (number of horizontal lines & 0xFF); lines are runs of consecutive pixels in a row
    run_start = np.ones_like(flat, dtype=bool)
    run_start[1:] = flat[1:] != flat[:-1] + 1
    run_start |= xs == 0
    run_end = np.ones_like(flat, dtype=bool)
    run_end[:-1] = (flat[:-1] + 1 != flat[1:]) | (xs[:-1] == width - 1)  # lines end at the edge
    # a label's first pixel and its first line end (the first pixel of all where it has none,
    # as the ids of earlier versions had it)
    first = np.zeros(n + 1, np.int64)
    ends = np.zeros(n + 1, np.int64)
    present = counts > 0
    if present.any():
        s = starts[present]
        idx = np.flatnonzero(present) + 1
        ys_o, xs_o = ys[order], xs[order]
        y0[idx] = np.minimum.reduceat(ys_o, s)
        y1[idx] = np.maximum.reduceat(ys_o, s) + 1
        x0[idx] = np.minimum.reduceat(xs_o, s)
        x1[idx] = np.maximum.reduceat(xs_o, s) + 1
        first[idx] = order[s]
        end_at = np.flatnonzero(run_end[order])
        k = np.searchsorted(end_at, s)
        inside = k < len(end_at)
        inside[inside] = end_at[k[inside]] < (s + counts[present])[inside]
        ends[idx[inside]] = order[end_at[k[inside]]]
    line_count = np.bincount(lab[run_start], minlength=n + 1)
    mid_x = (xs[first] + xs[ends]) // 2 + x_offset
    ids = (mid_x.astype(np.int64) << 20) | (((ys[first] + y_offset).astype(np.int64) & 0xFFF) << 8) \
        | (line_count & 0xFF)
    return {"x": cx[1:] + x_offset, "y": cy[1:] + y_offset, "area": area[1:], "angle": angle[1:],
            "major": major[1:], "minor": minor[1:], "intensity": intensity[1:],
            "y0": y0[1:] + y_offset, "x0": x0[1:] + x_offset, "y1": y1[1:] + y_offset,
            "x1": x1[1:] + x_offset, "blob_id": ids[1:]}


@dataclass(frozen=True, eq=False)
class CodedThreshold:
    """``threshold`` moved into the values a video stores (the frame is ``lut[coded]``, e.g.
    limited-range luma, see :meth:`Video.coded_frames`): a pixel is foreground where
    ``coded < below`` or ``coded > above`` (bounds per pixel, from its background value).

    Exactly the pixels whose difference to the background reaches the threshold in the
    converted frame, because ``lut`` never decreases; detection then converts only the few
    pixels it keeps instead of the whole frame (about 0.3 ms of a 512 px frame's 6)."""

    lut: np.ndarray
    background: np.ndarray  # uint8, grey (converted) values
    below: np.ndarray  # uint8 per pixel
    above: np.ndarray | None  # uint8 per pixel; None: no pixel is foreground for being brighter

    @classmethod
    def make(cls, lut: np.ndarray, background: np.ndarray, params: DetectionParams
             ) -> CodedThreshold | None:
        """The bounds for ``background`` (uint8), or None where the foreground of some
        background value is not "dark enough or bright enough" (a threshold of 0)."""
        grey = difference_image(np.asarray(lut, np.uint8)[None, :].repeat(256, 0),
                                np.arange(256, dtype=np.uint8)[:, None].repeat(256, 1), params)
        foreground = grey >= params.threshold  # [background value, coded value]
        if foreground.all(axis=1).any():
            return None
        below = np.argmin(foreground, axis=1)  # first coded value that is background
        above = 255 - np.argmin(foreground[:, ::-1], axis=1)  # last one
        coded = np.arange(256)
        if not np.array_equal(foreground, (coded < below[:, None]) | (coded > above[:, None])):
            return None
        return cls(np.asarray(lut, np.uint8), background, below.astype(np.uint8)[background],
                   None if (above == 255).all() else above.astype(np.uint8)[background])

    def mask(self, coded: np.ndarray) -> np.ndarray:
        mask = coded < self.below
        if self.above is not None:
            mask |= coded > self.above
        return mask

    def values(self, coded: np.ndarray, flat: np.ndarray, params: DetectionParams) -> np.ndarray:
        """The difference image at the raster indices ``flat`` only."""
        ys, xs = np.divmod(flat, coded.shape[1])
        return difference_image(self.lut[coded[ys, xs]], self.background.ravel()[flat], params)


def closing(mask: np.ndarray, size: int) -> np.ndarray:
    """TRex's closing (``use_closing``) with a ``size`` x ``size`` square: exactly what
    ``ndimage.binary_closing`` gives (pixels outside the frame count as background), from
    separable maximum / minimum filters instead of a 2-D structuring element, about 3.5 times
    faster at size 7 on a 1080p frame (113 -> 32 ms)."""
    grown = ndimage.maximum_filter(mask.view(np.uint8), size=size, mode="constant", cval=0,
                                   origin=-1 if size % 2 == 0 else 0)
    return ndimage.minimum_filter(grown, size=size, mode="constant", cval=0).view(bool)


def _foreground(frame: np.ndarray, background: np.ndarray, params: DetectionParams,
                coded: CodedThreshold | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """Difference image and the thresholded foreground mask (closing, dilation, crop applied).
    With ``coded``, ``frame`` holds coded values and no difference image is made (None)."""
    if coded is None:
        diff = difference_image(frame, background, params)
        mask = diff >= params.threshold
    else:
        diff, mask = None, coded.mask(frame)
    if params.closing_size > 1:
        mask = closing(mask, params.closing_size)
    if params.dilation_size > 0:
        mask = ndimage.binary_dilation(mask, iterations=params.dilation_size)
    if params.crop is not None:
        x0, y0, x1, y1 = params.crop
        cropped = np.zeros_like(mask)
        cropped[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
        mask = cropped
    return diff, mask


def _label_foreground(frame: np.ndarray, background: np.ndarray, params: DetectionParams
                      ) -> tuple[np.ndarray, np.ndarray, int]:
    """Difference image, connected components of the thresholded foreground, their count."""
    diff, mask = _foreground(frame, background, params)
    labels, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
    return diff, labels, n


class _Lines:
    """The foreground of a frame as horizontal lines (runs of pixels), TRex's representation,
    grouped into 8-connected blobs.

    A video frame's foreground is sparse (a few per cent of the pixels), so working on its lines
    instead of a label image skips most of the frame: the lines are found and joined into blobs
    in one compiled pass (:func:`.lines.label_lines`), and every region property is a sum over
    lines in closed form.
    """

    def __init__(self, mask: np.ndarray, min_area: int = 1) -> None:
        from .lines import label_lines  # compiled on first use (numba caches it on disk)

        self.width = mask.shape[1]
        self._pixel_blob: np.ndarray | None = None
        # isolated lines of fewer than min_area (at most SPECK_LINE) pixels are specks: sensor
        # noise makes thousands a frame (realistic 8 x 3000: 2,700 of 3,700 lines)
        short = min(min_area, SPECK_LINE + 1) if min_area > 1 else 0
        self.y, self.x0, self.x1, self.blob, self.n = label_lines(
            np.ascontiguousarray(mask, dtype=bool), short)
        length = self.x1 - self.x0 + 1
        self.first_pixel = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64) \
            if len(length) else np.empty(0, np.int64)
        # foreground pixels of the lines kept, in raster order
        self.flat = np.repeat(self.y * self.width + self.x0 - self.first_pixel, length) \
            + np.arange(int(length.sum()))

    def properties(self, values: np.ndarray, keep: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """:func:`region_properties` of the blobs marked in ``keep`` (per blob), and which blob
        each returned row is; ``values``: the difference image at :attr:`flat`."""
        blobs = np.flatnonzero(keep)
        on = keep[self.blob]
        index = np.full(self.n, -1, np.int64)
        index[blobs] = np.arange(len(blobs))
        b = index[self.blob[on]]
        y, x0, x1 = self.y[on].astype(np.float64), self.x0[on].astype(np.float64), \
            self.x1[on].astype(np.float64)
        m = len(blobs)
        length = x1 - x0 + 1
        area = np.bincount(b, length, m)
        safe = np.maximum(area, 1)
        sum_x = length * (x0 + x1) / 2
        sum_xx = (x1 * (x1 + 1) * (2 * x1 + 1) - (x0 - 1) * x0 * (2 * x0 - 1)) / 6
        cx = np.bincount(b, sum_x, m) / safe
        cy = np.bincount(b, length * y, m) / safe
        mu20 = np.bincount(b, sum_xx, m) / safe - cx ** 2
        mu02 = np.bincount(b, length * y * y, m) / safe - cy ** 2
        mu11 = np.bincount(b, sum_x * y, m) / safe - cx * cy
        angle = 0.5 * np.arctan2(2 * mu11, mu20 - mu02)
        common = np.sqrt(np.maximum(((mu20 - mu02) / 2) ** 2 + mu11 ** 2, 0))
        major = 4 * np.sqrt(np.maximum((mu20 + mu02) / 2 + common, 0))
        minor = 4 * np.sqrt(np.maximum((mu20 + mu02) / 2 - common, 0))
        line_sums = np.add.reduceat(values.astype(np.float64), self.first_pixel)[on]
        intensity = np.bincount(b, line_sums, m) / safe
        y0 = np.full(m, np.iinfo(np.int64).max)
        y1 = np.zeros(m, np.int64)
        bx0 = np.full(m, np.iinfo(np.int64).max)
        bx1 = np.zeros(m, np.int64)
        yi = self.y[on]
        np.minimum.at(y0, b, yi)
        np.maximum.at(y1, b, yi + 1)
        np.minimum.at(bx0, b, self.x0[on])
        np.maximum.at(bx1, b, self.x1[on] + 1)
        # TRex's blob id from the first line (raster order) and the number of lines
        line_no = np.flatnonzero(on)
        first = np.full(m, len(self.y), np.int64)
        np.minimum.at(first, b, line_no)
        lines = np.bincount(b, minlength=m)
        mid_x = (self.x0[first] + self.x1[first]) // 2
        ids = (mid_x.astype(np.int64) << 20) | ((self.y[first].astype(np.int64) & 0xFFF) << 8) | \
            (lines & 0xFF)
        return {"x": cx, "y": cy, "area": area, "angle": angle, "major": major, "minor": minor,
                "intensity": intensity, "y0": y0, "x0": bx0, "y1": y1, "x1": bx1,
                "blob_id": ids}, blobs

    def crop(self, blob: int, values: np.ndarray, top: int, left: int, bottom: int, right: int
             ) -> np.ndarray:
        """The difference pixels of one blob in its bounding box (0 outside the blob);
        ``values``: the difference image at :attr:`flat`."""
        if self._pixel_blob is None:  # which blob each foreground pixel is (once per frame)
            self._pixel_blob = np.repeat(self.blob, self.x1 - self.x0 + 1)
        mine = self._pixel_blob == blob
        ys, xs = np.divmod(self.flat[mine], self.width)
        out = np.zeros((bottom - top, right - left), np.uint8)
        out[ys - top, xs - left] = values[mine]
        return out


PREVIEW_ANIMAL, PREVIEW_OUT_OF_RANGE, PREVIEW_FRAGMENT, PREVIEW_SPECK = 1, 2, 3, 4
BLOB_KINDS = {PREVIEW_ANIMAL: "animal-sized", PREVIEW_FRAGMENT: "fragments",
              PREVIEW_SPECK: "specks", PREVIEW_OUT_OF_RANGE: "too large"}


def blob_kind(area: np.ndarray, params: DetectionParams) -> np.ndarray:
    """What tracking makes of blobs of these areas (px): :data:`PREVIEW_SPECK` (smaller than the
    prefilter: dropped at detection), :data:`PREVIEW_FRAGMENT` (detected, but smaller than
    ``blob_size_ranges``: a leg, a wing, part of an animal), :data:`PREVIEW_ANIMAL` (inside
    a range: tracked) or :data:`PREVIEW_OUT_OF_RANGE` (larger: several animals, or not one)."""
    area = np.asarray(area, float)
    inside = np.zeros(len(area), bool)
    for lo, hi in params.size_ranges_px:
        inside |= (area >= lo) & (area <= hi)
    kind = np.where(area > params.max_area_px, PREVIEW_OUT_OF_RANGE, PREVIEW_FRAGMENT)
    kind = np.where(area < params.prefilter_px[0], PREVIEW_SPECK, kind)
    return np.where(inside, PREVIEW_ANIMAL, kind).astype(np.uint8)


def preview_labels(frame: np.ndarray, background: np.ndarray, params: DetectionParams
                   ) -> tuple[np.ndarray, dict[str, int]]:
    """What the threshold sees in one frame, for tuning before tracking: every foreground blob
    labelled by :func:`blob_kind`, and how many blobs of each kind there are."""
    _, labels, n = _label_foreground(frame, background, params)
    out = np.zeros(labels.shape, np.uint8)
    counts = dict.fromkeys(BLOB_KINDS.values(), 0)
    if n == 0:
        return out, counts
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    kind = blob_kind(area, params)
    for value, name in BLOB_KINDS.items():
        counts[name] = int((kind == value).sum())
    return np.concatenate([[0], kind]).astype(np.uint8)[labels], counts


def blob_census(samples: np.ndarray, background: np.ndarray, params: DetectionParams
                ) -> list[np.ndarray]:
    """The area (px) of every foreground blob of each sampled frame, specks included: what the
    preview's histogram and blobs-per-frame strip show."""
    bg = np.clip(np.rint(background), 0, 255).astype(np.uint8)
    areas = []
    for frame in samples:
        _, mask = _foreground(frame, bg, params)
        lines = _Lines(mask)
        areas.append(np.bincount(lines.blob, lines.x1 - lines.x0 + 1, lines.n).astype(float)
                     if lines.n else np.empty(0))
    return areas


def detect_frame(frame: np.ndarray, background: np.ndarray, params: DetectionParams,
                 frame_index: int = 0, coded: CodedThreshold | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[int, tuple[int, int, np.ndarray]]]:
    """Blobs of one frame as columns, and the pixels of blobs that may be several animals.
    With ``coded``, ``frame`` holds the video's coded values (:class:`CodedThreshold`)."""
    diff, mask = _foreground(frame, background, params, coded)
    lines = _Lines(mask, min_area=int(np.ceil(params.prefilter_px[0])))
    if lines.n == 0:
        return _empty_frame(frame_index), {}
    # noise makes thousands of specks per frame: drop them before measuring anything else
    sizes = np.bincount(lines.blob, lines.x1 - lines.x0 + 1, lines.n)
    sized = (sizes >= params.prefilter_px[0]) & (sizes <= params.prefilter_px[1])
    if not sized.any():
        return _empty_frame(frame_index), {}
    values = diff.ravel()[lines.flat] if coded is None else coded.values(frame, lines.flat, params)
    props, original = lines.properties(values, sized)
    area = props["area"]
    keep = np.ones(len(original), bool)
    if params.intensity_range is not None:
        lo, hi = params.intensity_range
        keep &= (props["intensity"] >= lo) & (props["intensity"] <= hi)
    if params.include or params.ignore:
        keep &= _inside_polygons(props["x"], props["y"], params.include, params.ignore)
    rows = np.flatnonzero(keep)
    table = {name: values[rows] for name, values in props.items()}
    table["frame"] = np.full(len(rows), frame_index, np.int32)
    table["split"] = np.zeros(len(rows), bool)
    pixels: dict[int, tuple[int, int, np.ndarray]] = {}
    for k in np.flatnonzero(area[rows] > params.keep_pixels_above_px):
        top, left = int(table["y0"][k]), int(table["x0"][k])
        crop = lines.crop(int(original[rows[k]]), values, top, left, int(table["y1"][k]),
                          int(table["x1"][k]))
        pixels[int(k)] = (top, left, crop)
    return table, pixels


MIN_PART_RATIO = 0.3  # the parts of a split: smallest / largest area at least this


def _lopsided(areas: np.ndarray, min_ratio: float) -> bool:
    """Is the smallest part below ``min_ratio`` x the largest (specks, not animals)?"""
    return bool(areas.min() < min_ratio * areas.max())


def split_blob(crop: np.ndarray, top: int, left: int, k: int, threshold: int,
               global_shrink_limit: float = 0.2, min_ratio: float = MIN_PART_RATIO) -> dict[str, np.ndarray] | None:
    """Split a blob into ``k`` animals by raising the threshold (TRex's ``threshold`` algorithm).

    Raise the threshold on the blob's difference pixels by 1 until at least ``k`` cores
    appear whose smallest/largest size ratio is >= ``min_ratio``; give up when less than
    ``global_shrink_limit`` of the blob is left. The ``k`` largest cores then grow back over
    the whole blob (watershed), so each part is a whole animal, not just its darkest pixels.
    ``crop``: the blob's difference values in its bounding box (uint8, 0 outside the blob).
    """
    if k < 2 or not crop.size:
        return None
    # how many pixels reach each grey value: the grey values the blob holds (only they change
    # the mask) and how much of the blob is left at each, without counting a mask per step
    hist = np.bincount(crop.ravel(), minlength=threshold + 2)
    total = crop.size - int(hist[0])
    if total == 0:
        return None
    at_least = np.cumsum(hist[::-1])[::-1]
    # step through the values coarsely (about SPLIT_COARSE_LEVELS steps), and where k cores
    # appear go back to the first value that gives them (the result of raising the threshold by
    # one each time, for a fraction of the labelling)
    values = np.flatnonzero(hist[threshold + 1:]) + (threshold + 1)
    step = max(SPLIT_STEP, len(values) // SPLIT_COARSE_LEVELS)
    failed, i = -1, 0
    while i < len(values):
        if at_least[values[i]] < global_shrink_limit * total:
            return None
        labels, n = ndimage.label(crop >= values[i], structure=EIGHT_CONNECTED)
        if n < k:
            failed, i = i, i + step
            continue
        for j in range(failed + 1, i):
            finer, finer_n = ndimage.label(crop >= values[j], structure=EIGHT_CONNECTED)
            if finer_n >= k:
                labels, n, i = finer, finer_n, j
                break
        failed, i = len(values), i + step  # lopsided cores: go on, no more refining
        areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        order = np.argsort(areas)[::-1][:k]
        if areas[order[-1]] / areas[order[0]] < min_ratio:
            continue
        lookup = np.zeros(n + 1, labels.dtype)
        lookup[order + 1] = np.arange(1, k + 1)
        cores = lookup[labels]
        # every pixel of the blob goes to the nearest core (even parts, unlike intensity)
        iy, ix = ndimage.distance_transform_edt(cores == 0, return_distances=False,
                                                return_indices=True)
        flat = np.flatnonzero(crop)  # the blob's pixels, in raster order
        nearest = cores.ravel()[(iy.ravel() * crop.shape[1] + ix.ravel())[flat]]
        parts = _properties(flat, nearest, k, crop.ravel()[flat], crop.shape[1], top, left)
        if _lopsided(parts["area"], min_ratio):
            return None  # the cores were specks, not animals: the parts would be lopsided
        parts["split"] = np.ones(k, bool)
        return parts
    return None


KMEANS_ITERATIONS = 10  # at most; a split's k-means settles in 2-4


def _kmeans(points: np.ndarray, centres: np.ndarray) -> np.ndarray | None:
    """Each point's cluster after k-means from ``centres`` (at most :data:`KMEANS_ITERATIONS`
    rounds), None when a centre is left with no point. What scipy's ``kmeans2(points, centres,
    iter=10, minit="matrix", missing="raise")`` returns, but it stops once no point changes
    cluster (the same answer from there on): the tracker splits a blob this way in about half
    the frames of a contact, and ``kmeans2`` always ran its ten rounds with their input checks."""
    from scipy.cluster.vq import vq

    k = len(centres)
    nearest = None
    for _ in range(KMEANS_ITERATIONS):
        label = vq(points, centres, check_finite=False)[0]
        if nearest is not None and np.array_equal(label, nearest):
            break
        nearest = label
        count = np.bincount(label, minlength=k)
        if (count == 0).any():
            return None
        centres = np.column_stack([np.bincount(label, points[:, d], minlength=k) / count
                                   for d in range(points.shape[1])])
    return nearest


def split_blob_fill(crop: np.ndarray, top: int, left: int, seeds: np.ndarray,
                    min_ratio: float = MIN_PART_RATIO) -> dict[str, np.ndarray] | None:
    """Split a blob into one part per seed (x, y in frame coordinates: the animals' predicted
    positions) where raising the threshold found no cores (TRex's ``fill``); None when the
    parts would be lopsided (smallest < ``min_ratio`` x largest: the seeds do not describe it).

    Each pixel goes to the nearest part centre, the centres start at the seeds and move to the
    middle of their pixels (k-means, :func:`_kmeans`), so each animal gets its share of the
    blob wherever its prediction fell in it. Not a watershed from the seeds on the distance to
    the blob's edge, as before: a seed off its animal's middle (a prediction lags, an animal
    turns) lies on the slope of its neighbour's basin, and the neighbour's flood took all but a
    few pixels of it (realistic 8 x 3000 seed 1: 165 of 288 such splits had a part under the
    smallest animal size; slots then followed specks of 1-30 px through the contact).
    """
    mask = crop > 0
    if not mask.any() or len(seeds) < 2:
        return None
    ys, xs = np.nonzero(mask)
    pixels = np.column_stack([xs + left, ys + top]).astype(float)
    nearest = _kmeans(pixels, np.asarray(seeds, float))
    if nearest is None:  # a seed nearest to no pixel: the seeds do not describe the blob
        return None
    labels = np.zeros(crop.shape, np.int32)
    labels[ys, xs] = nearest + 1
    props = region_properties(labels, len(seeds), crop, top, left)
    if _lopsided(props["area"], min_ratio):
        return None
    props["split"] = np.ones(len(seeds), bool)
    return props


def _inside_polygons(x: np.ndarray, y: np.ndarray, include: tuple[np.ndarray, ...],
                     ignore: tuple[np.ndarray, ...]) -> np.ndarray:
    from skimage.measure import points_in_poly

    points = np.column_stack([x, y])
    keep = np.ones(len(points), bool)
    if include:
        keep &= np.any([points_in_poly(points, p) for p in include], axis=0)
    for polygon in ignore:
        keep &= ~points_in_poly(points, polygon)
    return keep


def _empty_frame(frame_index: int) -> dict[str, np.ndarray]:
    return {c: np.empty(0, _DTYPES.get(c, np.float32)) for c in COLUMNS}


def detect_range(video: Video, background: np.ndarray, params: DetectionParams, start: int, stop: int,
                 on_frame: Callable[[], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 decoder_threads: int | None = None) -> Detections:
    """Detect in frames ``start .. stop-1`` (decoded sequentially): one dask task.

    Frames outside ``params.analysis_range`` are not decoded and hold no blobs. A recording
    that stops decoding before its last frame (a truncated file) is detected up to its last
    decodable frame: the rest hold no blobs and are counted in ``undecodable``.
    """
    bg = np.clip(np.rint(background), 0, 255).astype(np.uint8)
    first, last = params.analysis_range
    lo = max(start, first) if first >= 0 else start
    hi = min(stop, last + 1) if last >= 0 else stop
    tables = [_empty_frame(i) for i in range(start, min(lo, stop))]
    pixels: list[dict] = [{} for _ in tables]
    expected = lo
    known_lut, known = None, None  # the video's conversion table and its thresholds
    try:
        for index, frame, lut in video.coded_frames(lo, hi, threads=decoder_threads) if lo < hi else ():
            if should_stop is not None and should_stop():
                raise Cancelled("detection cancelled")
            coded = None
            if lut is not None:
                if lut is not known_lut:
                    known_lut, known = lut, CodedThreshold.make(lut, bg, params)
                coded = known
                if coded is None:  # no bounds in the coded values: convert the frame
                    frame = np.take(lut, frame)
            table, frame_pixels = detect_frame(frame, bg, params, index, coded)
            tables.append(table)
            pixels.append(frame_pixels)
            expected = index + 1
            if on_frame is not None:
                on_frame()
    except VideoError:
        if hi < len(video):  # not at the end: a damaged middle is an error, not a truncation
            raise
    undecodable = 0
    if expected < hi:
        if hi < len(video):
            raise NapariTrexError(f"{video.path.name}: frames {expected}..{hi - 1} could not be "
                                  "decoded (the file seems damaged); set analysis_range to leave "
                                  "them out")
        undecodable = hi - expected
    while len(tables) < stop - start:
        tables.append(_empty_frame(start + len(tables)))
        pixels.append({})
    detections = Detections.from_frames(tables, pixels)
    detections.undecodable = undecodable
    return detections


def chunk_ranges(video: Video, chunk_frames: int) -> list[tuple[int, int]]:
    """Ranges of about ``chunk_frames`` frames that start on keyframes where the index is known
    (each chunk then decodes nothing twice)."""
    n = len(video)
    keyframes: list[int] = []
    if hasattr(video, "frame_index") and getattr(video, "_index", None) is not None:
        keyframes = list(video.frame_index().keyframes)
    bounds = [0]
    while bounds[-1] < n:
        target = bounds[-1] + chunk_frames
        if target >= n:
            bounds.append(n)
            break
        if keyframes:
            k = int(np.searchsorted(keyframes, target))
            candidates = [kf for kf in keyframes[max(0, k - 1): k + 1] if bounds[-1] < kf < n]
            if candidates:
                target = min(candidates, key=lambda kf: abs(kf - target))
        bounds.append(target)
    return list(zip(bounds[:-1], bounds[1:]))


class _FramesDone:
    """Counts detected frames from several workers and reports "detecting animals" progress
    (every 25 frames, and at the end)."""

    def __init__(self, total: int, progress: Callable[..., None] | None) -> None:
        self.total, self.progress = total, progress
        self.done = 0
        self.lock = threading.Lock()

    def __call__(self, frames: int = 1) -> None:
        with self.lock:
            before = self.done
            self.done += frames
            count = self.done
        if self.progress is not None and (count // 25 > before // 25 or count == self.total):
            self.progress(count, self.total, "detecting animals")


def detect_video(
    video: Video,
    background: np.ndarray,
    params: DetectionParams,
    chunk_frames: int = 250,
    scheduler: str | None = "threads",
    num_workers: int | None = None,
    progress: Callable[..., None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Detections:
    """Detect in every frame, in parallel over chunks of frames with dask.

    ``scheduler``: ``"threads"`` (default), ``"processes"``, ``"synchronous"``, or the address
    of a dask.distributed scheduler (``"tcp://host:8786"``) to spread the chunks over a cluster.
    """
    import dask

    ranges = chunk_ranges(video, max(1, chunk_frames))
    total = len(video)
    on_frame = _FramesDone(total, progress)

    if scheduler in (None, "threads", "synchronous"):
        tasks = [dask.delayed(detect_range)(video, background, params, a, b, on_frame, should_stop)
                 for a, b in ranges]
        parts = dask.compute(*tasks, scheduler=scheduler or "threads", num_workers=num_workers)
    else:
        tasks = [dask.delayed(detect_range)(video, background, params, a, b) for a, b in ranges]
        parts = _compute_with_progress(tasks, ranges, scheduler, num_workers, progress, should_stop,
                                       total)
    return Detections.concatenate(list(parts))


def _ready() -> bool:
    """A worker's first task: it has imported this module (and numpy, scipy, PyAV with it) and
    loaded the compiled labelling (numba: compiled once per machine, then read from its cache),
    before the first chunk is due."""
    _Lines(np.zeros((2, 8), bool))
    return True


@contextmanager
def detection_workers(processes: bool = False, num_workers: int | None = None
                      ) -> Iterator[Any]:
    """A pool for :func:`streamed_detection`, started early so that its start-up overlaps
    other work (the background is sampled meanwhile).

    Threads (``processes=False``: decoding and the numpy/scipy work release the GIL; what
    napari uses) or processes (no GIL shared with tracking: faster, after a second or so of
    start-up that this hides; spawned, never forked: a fork copies the locks of native thread
    pools (BLAS, FFmpeg) in whatever state they are, and the workers can hang on them; scripts
    need the usual ``if __name__ == "__main__":`` guard, as with dask's process scheduler).
    """
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    workers = num_workers or os.cpu_count() or 1
    if processes:
        import multiprocessing

        pool: Any = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        for _ in range(workers):  # spawn and import now, not when the first chunk is due
            pool.submit(_ready)
    else:
        pool = ThreadPoolExecutor(workers, thread_name_prefix="napari-trex-detect")
    pool.napari_trex_workers = workers
    pool.napari_trex_processes = processes
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def streamed_detection(video: Video, background: np.ndarray, params: DetectionParams,
                       chunk_frames: int = 250, num_workers: int | None = None,
                       progress: Callable[..., None] | None = None,
                       should_stop: Callable[[], bool] | None = None,
                       processes: bool = False, pool: Any = None) -> Iterator[StreamedDetections]:
    """Detect chunks of frames in a pool of workers and hand them over in order as they are
    done, so that tracking (sequential, in the caller's thread) runs while later chunks are
    detected.

    ``pool``: one from :func:`detection_workers` (started early); without it, one is started
    here with ``processes`` and ``num_workers``. Not dask: its local schedulers return results
    only when all are done, and tracking would wait for the whole video. Leaving the ``with``
    block (also by an exception) stops the chunks still waiting.
    """
    from concurrent.futures import wait

    ranges = chunk_ranges(video, max(1, chunk_frames))
    if pool is None:
        workers = num_workers or min(len(ranges), os.cpu_count() or 1) or 1
        with detection_workers(processes, workers) as own, \
                streamed_detection(video, background, params, chunk_frames, progress=progress,
                                   should_stop=should_stop, pool=own) as stream:
            yield stream
        return
    processes = pool.napari_trex_processes
    on_frame = _FramesDone(len(video), progress)
    stop = threading.Event()

    def stopped() -> bool:
        return stop.is_set() or (should_stop is not None and should_stop())

    def on_chunk(frames: int) -> Callable[[Any], None]:
        def report(future: Any) -> None:
            if not future.cancelled() and future.exception() is None:
                on_frame(frames)
        return report

    threads = 1 if min(len(ranges), pool.napari_trex_workers) > 1 else None  # chunks run in parallel
    futures = []
    try:
        for a, b in ranges:
            if processes:  # callables do not cross processes: progress per finished chunk
                future = pool.submit(detect_range, video, background, params, a, b, None, None,
                                     threads)
                future.add_done_callback(on_chunk(b - a))
            else:
                future = pool.submit(detect_range, video, background, params, a, b, on_frame,
                                     stopped, threads)
            futures.append(future)
        yield StreamedDetections(ranges, futures)
    finally:
        stop.set()
        for future in futures:
            future.cancel()
        wait(futures)  # the pool may be reused: let the chunks already running finish


def _compute_with_progress(tasks: list[Any], ranges: list[tuple[int, int]], scheduler: str,
                           num_workers: int | None, progress: Callable[..., None] | None,
                           should_stop: Callable[[], bool] | None, total: int) -> list[Detections]:
    """Processes or a distributed cluster: progress and cancelling per finished chunk."""
    import dask
    from dask.callbacks import Callback

    if scheduler == "processes":
        finished = [0]

        class _Progress(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):  # noqa: ANN001
                if isinstance(result, Detections):
                    finished[0] += result.n_frames
                    if progress is not None:
                        progress(finished[0], total, "detecting animals")
                if should_stop is not None and should_stop():
                    raise Cancelled("detection cancelled")

        with _Progress():
            return list(dask.compute(*tasks, scheduler="processes", num_workers=num_workers))
    from .scheduling import distributed_client

    client = distributed_client(scheduler, timeout="5s")
    from distributed import as_completed
    with client:
        futures = client.compute(tasks)
        index = {f.key: k for k, f in enumerate(futures)}
        results: list[Detections | None] = [None] * len(futures)
        finished = 0
        for future in as_completed(futures):
            if should_stop is not None and should_stop():
                client.cancel(futures)
                raise Cancelled("detection cancelled")
            results[index[future.key]] = future.result()
            finished += ranges[index[future.key]][1] - ranges[index[future.key]][0]
            if progress is not None:
                progress(finished, total, "detecting animals")
        return [r for r in results if r is not None]
