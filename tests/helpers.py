"""Test helpers: frames that carry their own frame number, and small constructed scenes.

Each numbered frame shows its index as a row of 12 bright/dark squares (binary), which survives
lossy compression, so a test can tell exactly which frame a decoder returned.
"""

from __future__ import annotations

import numpy as np

N_BITS = 12


def numbered_frames(n: int, height: int = 96, width: int = 128) -> np.ndarray:
    frames = np.full((n, height, width), 60, np.uint8)
    for i in range(n):
        for b in range(N_BITS):
            if (i >> b) & 1:
                frames[i, 8:24, 8 + b * 9: 16 + b * 9] = 230
        frames[i, 40:, :] = (np.arange(width) * 2 + i * 3) % 256  # moving texture: frames differ
    return frames


def frame_number(image: np.ndarray) -> int:
    """Read back the number drawn by :func:`numbered_frames`."""
    grey = image if image.ndim == 2 else image.mean(axis=2)
    return sum(1 << b for b in range(N_BITS) if grey[16, 12 + b * 9] > 145)


def disk_frames(paths: list[list[tuple[float, float, float]]], size: int = 128, value: int = 200
                ) -> np.ndarray:
    """Bright disks on a dark background: per frame, each animal as (x, y, radius)."""
    frames = np.full((len(paths), size, size), 20, np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for t, animals in enumerate(paths):
        for x, y, r in animals:
            frames[t][(xx - x) ** 2 + (yy - y) ** 2 <= r ** 2] = value
    return frames


def resting_pair(n_frames: int = 60, swollen: int = 25) -> list[list[tuple[float, float, float]]]:
    """Two animals walk up to each other, touch (one blob) for frames 15..45 and part again;
    in frame ``swollen`` the left one swells (posture), which makes that frame's split doubtful."""
    path = []
    for t in range(n_frames):
        gap = max(0.0, abs(30 - t) - 15) * 1.5
        path.append([(64 - 4.5 - gap, 64.0, 6.5 if t == swollen else 5.0), (64 + 4.5 + gap, 64.0, 5.0)])
    return path
