"""Test helpers: frames that carry their own frame number.

Each frame shows its index as a row of 12 bright/dark squares (binary), which survives
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
