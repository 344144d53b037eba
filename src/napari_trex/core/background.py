"""The background model: what the arena looks like without animals.

TRex combines ``average_samples`` frames, sampled evenly over the video, pixel by pixel with
``averaging_method``: the *mode* (most frequent grey value; the default, robust when animals
rest for a while), the *mean*, the *max* (dark animals on a bright background: an animal is
never the brightest thing at a pixel for long) or the *min* (bright animals on dark).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import Cancelled, NapariTrexError
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


def _mode(frames: np.ndarray, rows_per_block: int = 64) -> np.ndarray:
    """Most frequent 8-bit value per pixel (ties: the lower value), in row blocks to bound memory.

    A 256-bin histogram per pixel, as TRex does, filled one sample at a time: each sample
    adds one count to every pixel, so plain fancy-index increments are exact (no duplicates).
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
        for sample in block:
            counts[sample, pixels] += 1
        out[top: top + rows_per_block] = counts.argmax(axis=0).reshape(-1, w)
    return out


def sample_frames(video: Video, n_samples: int, progress: ProgressCallback | None = None,
                  should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, frames)``: about ``n_samples`` greyscale frames spread evenly over the video.

    Where the video has at least that many keyframes (long recordings), the samples are the
    keyframes nearest to the even positions: each then costs one decoded frame instead of a
    run from the previous keyframe. Frames are read in increasing order either way.
    """
    indices = sample_indices(len(video), n_samples)
    index = getattr(video, "frame_index", None)
    if index is not None and len(video) > 4 * n_samples:
        keyframes = np.asarray(index().keyframes)
        if len(keyframes) >= len(indices):
            nearest = np.clip(np.searchsorted(keyframes, indices), 0, len(keyframes) - 1)
            indices = np.unique(keyframes[nearest])
    stack = np.empty((len(indices), *video.frame_shape[:2]), dtype=np.uint8)
    for k, i in enumerate(indices):
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled while sampling frames")
        frame = video.read(int(i))
        stack[k] = frame if frame.ndim == 2 else rgb_to_grey(frame)
        if progress is not None:
            progress(k + 1, len(indices), "sampling frames")
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
