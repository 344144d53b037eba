"""napari reader: videos, folders of numbered images and TIFF stacks open as lazy layers.

napari calls :func:`get_reader` for every file dropped on it; it must return ``None`` for
anything it is not meant to read (and never raise), so other plugins get their turn.
Errors in a file that *is* ours (corrupt video, empty folder) become a napari notification
with the core's message, and no layer is added.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import NapariTrexError
from ..core.video import IMAGE_EXTENSIONS, TIFF_EXTENSIONS, VIDEO_EXTENSIONS, numbered_images, open_video
from .layers import video_layer_data

NULL_LAYER = [(None,)]  # napari's sentinel for "read fine, nothing to add"


def get_reader(path: str | os.PathLike | list) -> Callable[..., list] | None:
    """Our reader function if ``path`` is a video, an image folder or a multi-page TIFF."""
    try:
        if isinstance(path, list | tuple):
            if len(path) != 1:
                return None
            path = path[0]
        p = Path(os.fspath(path))
        if p.is_dir() and (p / "run.json").is_file():
            return read_results
        if p.suffix.lower() in (".npz", ".csv"):
            from .writer import is_tracks_file

            return read_tracks_file if is_tracks_file(p) else None
        if p.is_dir():
            has_images = bool(numbered_images(p))
            is_empty = not any(p.iterdir())
            return read_video if has_images or is_empty else None
        suffix = p.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            return read_video
        if suffix in TIFF_EXTENSIONS:
            return read_video if _tiff_pages(p) > 1 else None  # single images: napari's own reader
    except Exception:  # noqa: BLE001 - the reader contract: never raise on foreign input
        return None
    return None


def _tiff_pages(path: Path) -> int:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape
            axes = tif.series[0].axes
    except Exception:  # noqa: BLE001
        return 0
    if len(shape) <= 2 or (len(shape) == 3 and axes.endswith("S")):
        return 1
    return int(shape[0])


def read_video(path: str | os.PathLike | list, color: bool = False) -> list[Any]:
    """Layer data for ``path``: one lazy image layer (greyscale unless ``color``)."""
    if isinstance(path, list | tuple):
        path = path[0]
    try:
        video = open_video(path, color=color)
        layer = video_layer_data(video)
        _open_at_first_frame(layer[1]["metadata"]["path"])
        return [layer]
    except NapariTrexError as exc:
        _notify_error(str(exc))
        return NULL_LAYER


def _open_at_first_frame(path: str) -> None:
    """napari shows the middle frame of the first layer it gets; a recording starts at frame 0.
    Once the layer is in (after this reader returns), move the slider there."""
    try:
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QApplication
    except ImportError:  # pragma: no cover - no Qt: no viewer either
        return
    if QApplication.instance() is None:
        return

    def first_frame() -> None:
        import napari

        viewer = napari.current_viewer()
        if viewer is None:
            return
        ours = [layer for layer in viewer.layers
                if (layer.metadata or {}).get("path") == path and layer.ndim >= 3]
        if ours and len(viewer.layers) == len(ours):  # only on a fresh viewer
            viewer.dims.set_current_step(0, 0)

    QTimer.singleShot(0, first_frame)


def read_tracks_file(path: str | os.PathLike | list) -> list[Any]:
    """A tracks layer saved with File > Save Layers (CSV or NPZ), exactly as it was."""
    from .writer import read_tracks

    if isinstance(path, list | tuple):
        path = path[0]
    try:
        return read_tracks(path)
    except NapariTrexError as exc:
        _notify_error(str(exc))
        return NULL_LAYER


def read_results(path: str | os.PathLike | list) -> list[Any]:
    """A results folder of ``napari-trex track``: the video (when it is still where it was),
    the tracks and the animals, with identities and corrections."""
    from ..core.results import load_identities_and_edits, load_tracking
    from .layers import points_layer_data, results_metadata, tracks_layer_data

    if isinstance(path, list | tuple):
        path = path[0]
    try:
        run = load_tracking(path)
        identities, edited = load_identities_and_edits(path)
        layers = []
        if Path(run.video_info.path).exists():
            layers.append(video_layer_data(open_video(run.video_info.path)))
        layers.append(tracks_layer_data(run, identities, "tracks", edited,
                                        results_metadata(run, "tracks", str(path))))
        layers.append(points_layer_data(run, identities, "animals", edited,
                                        results_metadata(run, "animals", str(path))))
        return layers
    except NapariTrexError as exc:
        _notify_error(str(exc))
        return NULL_LAYER


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(f"napari-trex: {message}")


__all__ = ["get_reader", "read_video", "IMAGE_EXTENSIONS"]
