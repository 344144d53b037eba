"""Plugins > napari-trex > Open video: the reader with options (colour, chunk size).

Dragging a file onto napari always opens it greyscale, which is what tracking uses; this
panel is where a user asks for colour, or for larger chunks on a fast disk.
"""

# no `from __future__ import annotations`: magicgui reads the annotations at run time
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui import magic_factory

from ...core.errors import NapariTrexError
from ...core.video import open_video
from ..layers import video_layer_data

if TYPE_CHECKING:  # pragma: no cover
    import napari


@magic_factory(
    call_button="Open",
    path={"label": "video or TIFF", "mode": "r",
          "filter": "Videos (*.mp4 *.avi *.mov *.mkv *.m4v *.webm *.tif *.tiff)"},
    color={"label": "colour", "tooltip": "Open as RGB instead of greyscale (tracking uses greyscale)"},
    chunk_mb={"label": "chunk size (MB)", "min": 1, "max": 1024,
              "tooltip": "Frames decoded together when you move the time slider: small = snappy"},
)
def open_video_widget(viewer: "napari.viewer.Viewer", path: Path = Path(), color: bool = False,
                      chunk_mb: float = 16.0) -> None:
    """Open ``path`` lazily as an image layer; problems become a notification."""
    from napari.utils.notifications import show_error

    try:
        video = open_video(path, color=color)
        data, meta, _ = video_layer_data(video, chunk_mb=chunk_mb)
    except NapariTrexError as exc:
        show_error(f"napari-trex: {exc}")
        return
    viewer.add_image(data, **meta)
