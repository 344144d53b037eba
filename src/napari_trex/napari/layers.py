"""Pure converters from core objects to napari layer data (no Qt, no viewer needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.video import Video

LayerData = tuple[Any, dict[str, Any], str]


def video_layer_data(video: Video, chunk_mb: float = 16.0) -> LayerData:
    """An image layer backed by a lazy dask array; metadata keeps fps and the source path.

    Contrast limits are given explicitly: otherwise napari would compute them from the data,
    i.e. decode frames at open.
    """
    info = video.info
    if np.dtype(video.dtype) == np.uint8:
        limits = (0, 255)
    else:  # 16-bit cameras: percentiles of the first frame, never the whole stack
        first = np.asarray(video.read(0), dtype=float)
        lo, hi = np.percentile(first, [0.5, 99.5])
        limits = (float(lo), float(hi if hi > lo else lo + 1))
    meta = {
        "name": Path(video.path).stem if Path(video.path).suffix else Path(video.path).name,
        "rgb": bool(video.color),
        "contrast_limits": limits,
        "metadata": {
            "napari_trex": "video",
            "path": os.fspath(video.path),
            "fps": info.fps,
            "fps_assumed": info.fps_assumed,
            "color": bool(video.color),
            "video_info": info.as_dict(),
        },
    }
    return video.as_dask(chunk_mb=chunk_mb), meta, "image"


def ground_truth_tracks_data(truth: dict[str, np.ndarray], name: str = "ground truth") -> LayerData:
    """A Tracks layer ``(track_id, t, y, x)`` of a ground-truth table, coloured by identity."""
    order = np.lexsort((truth["frame"], truth["identity"]))
    identity = truth["identity"][order]
    data = np.column_stack([identity, truth["frame"][order], truth["y"][order], truth["x"][order]])
    meta = {
        "name": name,
        "features": {"identity": identity},
        "color_by": "identity",
        "tail_length": 25,
        "tail_width": 3,
        "blending": "translucent",
        "metadata": {"napari_trex": "ground_truth"},
    }
    return data.astype(float), meta, "tracks"
