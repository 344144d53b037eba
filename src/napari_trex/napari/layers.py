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
        "axis_labels": ("frame", "y", "x"),  # the slider says "frame", not "-3"
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


# -- tracking results as layers ------------------------------------------------------------------

UNIDENTIFIED_RGBA = (0.6, 0.6, 0.6, 1.0)
IDENTIFIED_TEXT, UNIDENTIFIED_TEXT = "lime", "white"  # TRex: green numbers once identified
_BASE_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#17becf", "#bcbd22", "#f7b6d2", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896"]


def identity_palette(n: int) -> np.ndarray:
    """``(n, 4)`` RGBA colours, one per identity: a fixed qualitative palette first (so
    identity 3 has the same colour in every run and panel), then evenly spaced hues."""
    import colorsys

    colours = []
    for k in range(n):
        if k < len(_BASE_PALETTE):
            h = _BASE_PALETTE[k].lstrip("#")
            colours.append([int(h[i: i + 2], 16) / 255 for i in (0, 2, 4)] + [1.0])
        else:
            hue = (k * 0.618033988749895) % 1.0
            colours.append(list(colorsys.hsv_to_rgb(hue, 0.75, 0.95)) + [1.0])
    return np.array(colours, float).reshape(n, 4)


def _colour_table(n: int) -> np.ndarray:
    """Row 0 unidentified (grey), row k + 1 identity k."""
    return np.vstack([np.array(UNIDENTIFIED_RGBA)[None], identity_palette(n)])


def identity_rgba(identity: np.ndarray, n: int) -> np.ndarray:
    """Colour of each value of ``identity`` (-1 = unidentified: grey)."""
    return _colour_table(n)[np.clip(np.asarray(identity, int) + 1, 0, n)]


def identity_colour_key(identity: np.ndarray, n: int) -> np.ndarray:
    """Identity mapped into [0, 1] for the Tracks layer's step colormap (see
    :func:`identity_colormap`): the middle of bin ``identity + 1`` of ``n + 1`` bins."""
    return (np.asarray(identity, float) + 1.5) / (n + 1)


def identity_colormap(n: int) -> Any:
    """A napari step colormap giving ``identity_colour_key`` values the palette colours
    (napari normalises a feature to its own min..max unless it has a colormap of its own,
    which would change colours whenever the set of identities changes)."""
    from napari.utils.colormaps import Colormap

    return Colormap(colors=_colour_table(n), controls=np.linspace(0, 1, n + 2), interpolation="zero",
                    name=f"napari-trex identities ({n})")


def _identity_columns(run: Any, identities: Any, table: dict[str, np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Identity shown for each trajectory row and whether it is a real (identified) one.

    Before identification the tracking slot is shown (as TRex does) but counts as not
    identified; afterwards the tracklet's identity (-1 where none was given)."""
    if identities is None:
        return table["tracking_slot"].astype(int), np.zeros(len(table["frame"]), bool)
    identity = table["identity"].astype(int)
    return identity, identity >= 0


def results_metadata(run: Any, kind: str, output_dir: str = "",
                     settings: Any = None) -> dict[str, Any]:
    """What a result layer carries so that saving and reopening it loses nothing: the number
    of animals, the results folder and the corrections (TRex's manual_matches/splits)."""
    settings = settings or run.settings
    return {"napari_trex": kind, "n_individuals": run.n_individuals, "output_dir": str(output_dir),
            "video": str(run.video_info.path),
            "manual_matches": {int(f): {int(i): int(b) for i, b in m.items()}
                               for f, m in settings.manual_matches.items()},
            "manual_splits": {int(f): [int(b) for b in v] for f, v in settings.manual_splits.items()}}


def _edited_rows(table: dict[str, np.ndarray], edited: Any) -> np.ndarray:
    if edited is None:
        return np.zeros(len(table["frame"]), bool)
    edited = np.asarray(edited, bool)
    return np.where(table["tracklet"] >= 0, edited[np.maximum(table["tracklet"], 0)], False)


def tracks_layer_data(run: Any, identities: Any = None, name: str = "tracks", edited: Any = None,
                      metadata: dict[str, Any] | None = None) -> LayerData:
    """A Tracks layer: one track per tracklet (``track_id`` = tracklet id), coloured by
    identity, with features identity, tracklet, end_reason, confidence, edited."""
    from ..core.results import trajectory_table
    from ..core.tracklets import reason_names

    table = trajectory_table(run, identities)
    keep = table["tracklet"] >= 0
    table = {k: v[keep] for k, v in table.items()}
    order = np.lexsort((table["frame"], table["tracklet"]))
    table = {k: v[order] for k, v in table.items()}
    identity, identified = _identity_columns(run, identities, table)
    n = run.n_individuals
    tracklets = run.result.tracklets
    reasons = np.array([reason_names(int(c)) for c in tracklets.end_reason], dtype=object)
    data = np.column_stack([table["tracklet"], table["frame"], table["y"], table["x"]]).astype(float)
    features = {
        "identity": identity,
        "identified": identified,
        "tracklet": table["tracklet"].astype(int),
        "end_reason": reasons[table["tracklet"]] if len(reasons) else np.empty(0, object),
        "confidence": table["identity_confidence"].astype(float),
        "source": table["identity_source"].astype(str),  # network, elimination, inferred, ...
        "edited": _edited_rows(table, edited),
        "identity_colour": identity_colour_key(identity, n),
    }
    meta = {
        "name": name,
        "features": features,
        "color_by": "identity_colour",
        "colormaps_dict": {"identity_colour": identity_colormap(n)},
        "tail_length": 30,
        "tail_width": 3,
        "blending": "translucent",
        "metadata": metadata or results_metadata(run, "tracks"),
    }
    return data, meta, "tracks"


EDITED_SYMBOL = "diamond"


SELECTION_SCALE = 1.5  # the selection ring around a marker
LABEL_OFFSET = 0.6 * SELECTION_SCALE  # label beyond the ring, diagonally (> ring radius 0.75)


def marker_size(areas: np.ndarray) -> float:
    """Marker diameter (px) for animals of these blob areas: the circle of the median area,
    a quarter larger so the ring surrounds an elongated body instead of covering it."""
    if not len(areas):
        return 10.0
    return float(max(6.0, 1.25 * 2 * np.sqrt(np.median(areas) / np.pi)))


def points_layer_data(run: Any, identities: Any = None, name: str = "animals", edited: Any = None,
                      metadata: dict[str, Any] | None = None) -> LayerData:
    """A Points layer of every animal in every frame (napari shows the current frame's),
    labelled with its identity number: filled discs and green numbers once identified,
    rings and white numbers before (the tracking slot) or where no identity was given, and
    diamonds where the user corrected the identity."""
    from ..core.results import trajectory_table

    table = trajectory_table(run, identities)
    identity, identified = _identity_columns(run, identities, table)
    n = run.n_individuals
    colours = identity_rgba(np.where(identity >= 0, identity, -1), n)
    label = np.where(identity >= 0, identity.astype(str), "?").astype(object)
    size = marker_size(table["area"])
    data = np.column_stack([table["frame"], table["y"], table["x"]]).astype(float)
    features = {
        "identity": identity,
        "identified": identified,
        "tracklet": table["tracklet"].astype(int),
        "confidence": table["identity_confidence"].astype(float),
        "source": table["identity_source"].astype(str),
        "label": label,
        "text_colour": np.where(identified, IDENTIFIED_TEXT, UNIDENTIFIED_TEXT).astype(object),
        "edited": _edited_rows(table, edited),
    }
    symbol = np.where(features["edited"], EDITED_SYMBOL, np.where(identified, "disc", "ring"))
    meta = {
        "name": name,
        "features": features,
        "face_color": colours * [1, 1, 1, 0.15],  # the animal stays visible under its marker
        "border_color": colours,
        "border_width": 0.12,
        "symbol": symbol.astype(object),
        "size": size,
        # the number sits outside the marker and outside the selection ring
        "text": {"string": "{label}", "color": {"feature": "text_colour"}, "size": 12,
                 "anchor": "lower_left", "translation": [0, -LABEL_OFFSET * size, LABEL_OFFSET * size]},
        "metadata": metadata or results_metadata(run, "animals"),
    }
    return data, meta, "points"
