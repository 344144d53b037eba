"""The background model: what the arena looks like without animals.

TRex combines ``average_samples`` frames, sampled evenly over the video, pixel by pixel with
``averaging_method``: the *mode* (most frequent grey value; the default), the *mean*, the *max*
(dark animals on a bright background: an animal is never the brightest thing at a pixel for
long) or the *min* (bright animals on dark).

A plain mode or mean keeps an animal that rests in the same place for most of the samples: it
becomes part of the background, disappears from the detections, and leaves a ghost where it
was once it walks away (TRex users are told to switch to max/min by hand). napari-trex
computes *mode* and *mean* only from the samples in which no animal covers the pixel
(:func:`background_from_samples`):

1. the animals' polarity: darker or lighter than a first (median) background, by which sign
   most foreground pixels have (with ``enable_absolute_difference`` off, TRex only looks for
   dark animals);
2. a background no resting animal survives: per pixel the brightest value (dark animals) that
   at least :data:`UNCOVERED_SHARE` of the samples reach (a max, robust to noise), or the
   darkest for light animals;
3. in each sample, the pixels that differ from that by at least ``threshold`` in the animals'
   direction (grown by a pixel for the soft edges) are covered by an animal;
4. mode or mean over the samples that are not covered; where fewer than
   :data:`MIN_UNCOVERED` are, the value of step 2.

An animal that rests in one place in more than 90 % of the samples stays in the background
whatever the method: give such recordings a ``background_image``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import Cancelled, NapariTrexError, VideoError
from .settings import Settings
from .video import Video, rgb_to_grey

ProgressCallback = Callable[..., None]


def sample_indices(n_frames: int, n_samples: int) -> np.ndarray:
    """``n_samples`` frame indices spread evenly over the video (sorted, unique)."""
    n = max(1, min(n_frames, n_samples))
    return np.unique(np.linspace(0, n_frames - 1, n).round().astype(int))


def combine(frames: np.ndarray, method: str) -> np.ndarray:
    """Per-pixel mode / mean / max / min of a stack ``(S, H, W)`` of uint8 frames → float32."""
    if method == "mean":
        return frames.mean(axis=0, dtype=np.float64).astype(np.float32)
    if method == "max":
        return frames.max(axis=0).astype(np.float32)
    if method == "min":
        return frames.min(axis=0).astype(np.float32)
    if method == "mode":
        return _mode(frames).astype(np.float32)
    raise ValueError(f"unknown averaging_method {method!r}")


UNCOVERED_SHARE = 0.1  # share of samples in which a pixel must show the arena (step 2 above)
MIN_UNCOVERED = 3  # fewest uncovered samples for a mode/mean of the arena (step 4)


def animal_polarity(frames: np.ndarray, threshold: int, absolute: bool = True) -> int:
    """-1 when the animals are darker than the background, +1 when lighter: the sign most
    pixels that differ from the median of ``frames`` by at least ``threshold`` have."""
    if not absolute:
        return -1
    step = max(1, frames.shape[1] * frames.shape[2] // 250_000)  # a subsample of pixels is plenty
    flat = frames.reshape(len(frames), -1)[:, ::step]
    median = np.median(flat, axis=0)
    diff = flat.astype(np.int16) - median.astype(np.int16)
    threshold = max(threshold, 1)
    darker, lighter = int((diff <= -threshold).sum()), int((diff >= threshold).sum())
    return -1 if darker >= lighter else 1


def uncovered_extreme(frames: np.ndarray, polarity: int, rows_per_block: int = 64) -> np.ndarray:
    """Per pixel the brightest (polarity -1) or darkest (+1) value that at least
    :data:`UNCOVERED_SHARE` of the samples reach: an arena without the animals, resting ones
    included, unless one covers the pixel in nearly every sample."""
    n = len(frames)
    k = max(0, min(n - 1, int(np.floor((1 - UNCOVERED_SHARE) * (n - 1)))))
    if polarity > 0:
        k = n - 1 - k
    out = np.empty(frames.shape[1:], np.uint8)
    for top in range(0, frames.shape[1], rows_per_block):
        block = frames[:, top: top + rows_per_block]
        out[top: top + rows_per_block] = np.partition(block, k, axis=0)[k]
    return out


def background_from_samples(frames: np.ndarray, method: str, threshold: int, absolute: bool = True
                            ) -> tuple[np.ndarray, int]:
    """The background of a stack ``(S, H, W)`` of sampled uint8 frames, and the animals'
    polarity (-1 darker, +1 lighter than it). *mode* and *mean* use only the samples in which
    no animal covers a pixel (module docstring); *max* and *min* are TRex's, as asked."""
    polarity = animal_polarity(frames, threshold, absolute)
    if method in ("max", "min") or len(frames) < MIN_UNCOVERED:
        return combine(frames, method), polarity
    from scipy import ndimage

    arena = uncovered_extreme(frames, polarity)
    covered = np.empty(frames.shape, bool)
    for k, frame in enumerate(frames):
        diff = (arena.astype(np.int16) - frame) if polarity < 0 else (frame.astype(np.int16) - arena)
        covered[k] = ndimage.binary_dilation(diff >= max(threshold, 1), iterations=1)
    uncovered = ~covered
    count = uncovered.sum(axis=0)
    if method == "mean":
        total = np.where(uncovered, frames, 0).sum(axis=0, dtype=np.float64)
        result = total / np.maximum(count, 1)
    else:
        result = _mode(frames, weights=uncovered).astype(np.float64)
    result = np.where(count >= MIN_UNCOVERED, result, arena)
    return result.astype(np.float32), polarity


def _mode(frames: np.ndarray, rows_per_block: int = 64, weights: np.ndarray | None = None
          ) -> np.ndarray:
    """Most frequent 8-bit value per pixel (ties: the lower value), in row blocks to bound memory.

    A 256-bin histogram per pixel, as TRex does, filled one sample at a time: each sample
    adds one count to every pixel, so plain fancy-index increments are exact (no duplicates).
    ``weights`` (bool, like ``frames``) counts only the samples marked True.
    """
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    n, h, w = frames.shape
    out = np.empty((h, w), dtype=np.uint8)
    count_type = np.uint8 if n < 256 else np.uint16
    for top in range(0, h, rows_per_block):
        block = frames[:, top: top + rows_per_block].reshape(n, -1)
        pixels = np.arange(block.shape[1])
        counts = np.zeros((256, block.shape[1]), dtype=count_type)
        if weights is None:
            for sample in block:
                counts[sample, pixels] += 1
        else:
            for sample, use in zip(block, weights[:, top: top + rows_per_block].reshape(n, -1)):
                counts[sample, pixels] += use.astype(count_type)
        out[top: top + rows_per_block] = counts.argmax(axis=0).reshape(-1, w)
    return out


def sample_frames(video: Video, n_samples: int, progress: ProgressCallback | None = None,
                  should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, frames)``: about ``n_samples`` greyscale frames spread evenly over the video.

    Where the video has at least that many keyframes (long recordings), the samples are the
    keyframes nearest to the even positions: each then costs one decoded frame instead of a
    run from the previous keyframe. Otherwise several samples share a run between keyframes:
    those runs are decoded once each, in parallel (one thread per core).
    """
    indices = sample_indices(len(video), n_samples)
    index = getattr(video, "frame_index", None)
    keyframes = np.asarray(index().keyframes) if index is not None else np.empty(0, np.int64)
    if len(keyframes) and len(video) > 4 * n_samples and len(keyframes) >= len(indices):
        nearest = np.clip(np.searchsorted(keyframes, indices), 0, len(keyframes) - 1)
        indices = np.unique(keyframes[nearest])
    stack = np.empty((len(indices), *video.frame_shape[:2]), dtype=np.uint8)
    done = [0]
    lock = threading.Lock()

    stored = np.zeros(len(indices), bool)
    failures: list[VideoError] = []

    def store(k: int, frame: np.ndarray) -> None:
        stack[k] = frame if frame.ndim == 2 else rgb_to_grey(frame)
        with lock:
            done[0] += 1
            count = done[0]
            stored[k] = True
        if progress is not None:
            progress(count, len(indices), "sampling frames")

    def run(group: np.ndarray) -> None:  # sample positions (into indices) between two keyframes
        try:
            _run(group)
        except VideoError as exc:
            failures.append(exc)  # fine if at the end (a truncated file; checked below)

    def _run(group: np.ndarray) -> None:
        wanted = {int(indices[k]): int(k) for k in group}
        first, last = int(indices[group[0]]), int(indices[group[-1]])
        if len(group) == 1:
            store(int(group[0]), video.read(first))
            return
        for i, frame in video.frames(first, last + 1, threads=1):
            if should_stop is not None and should_stop():
                raise Cancelled("cancelled while sampling frames")
            if i in wanted:
                store(wanted[i], frame)

    gop = np.searchsorted(keyframes, indices, side="right") if len(keyframes) else \
        np.arange(len(indices))
    groups = [np.flatnonzero(gop == g) for g in np.unique(gop)]
    if should_stop is not None and should_stop():
        raise Cancelled("cancelled while sampling frames")
    workers = min(len(groups), os.cpu_count() or 1)
    if workers > 1 and len(groups) < len(indices):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, groups))
    else:
        for group in groups:
            if should_stop is not None and should_stop():
                raise Cancelled("cancelled while sampling frames")
            run(group)
    if failures and (not stored.any() or np.flatnonzero(stored).max() > np.flatnonzero(~stored).min()):
        raise failures[0]  # frames missing in the middle: damaged, not just cut short
    if not stored.all():  # the end of a truncated recording
        indices, stack = indices[stored], stack[stored]
    if not len(indices):
        raise VideoError(f"{getattr(video, 'path', 'the video')}: no frame could be decoded")
    return indices, stack


def estimate_background(
    video: Video,
    average_samples: int = 100,
    averaging_method: str = "mode",
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """The background image (float32, H×W) from frames sampled evenly over ``video``."""
    _, stack = sample_frames(video, average_samples, progress, should_stop)
    return combine(stack, averaging_method)


def background_for(samples: np.ndarray, settings: Settings) -> np.ndarray:
    """The background the settings ask for: ``background_image`` if given, else estimated from
    the sampled frames (the same for tracking and for the panel's preview)."""
    if settings.background_image:
        return load_background(settings.background_image, samples.shape[1:3])
    return background_from_samples(samples, settings.averaging_method,
                                   max(settings.threshold, settings.track_threshold),
                                   settings.enable_absolute_difference)[0]


def load_background(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """A user-supplied background image (greyscale or RGB, any format imageio reads)."""
    from imageio import v3 as iio

    p = Path(path).expanduser()
    if not p.is_file():
        raise NapariTrexError(f"background_image not found: {p}")
    try:
        image = np.asarray(iio.imread(p), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - imageio raises many types
        raise NapariTrexError(f"background_image {p.name} is not a readable image ({exc})") from None
    if image.ndim == 3:
        image = rgb_to_grey(image[..., :3])
    if image.shape != tuple(shape):
        raise NapariTrexError(f"background_image {p.name} is {image.shape[1]}x{image.shape[0]} px, "
                              f"the video {shape[1]}x{shape[0]} px")
    return image
