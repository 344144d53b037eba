"""The state napari-trex keeps per viewer, shared by its panels.

Panels never talk to each other: the tracking panel puts a run here, the identification
panel puts identities here, and every panel (and the result layers) redraws on
:attr:`Session.changed`. One session per viewer, found with :func:`session_for`.
"""

from __future__ import annotations

import weakref
from typing import Any

from psygnal import Signal

from ..core.settings import Settings
from .layers import points_layer_data, tracks_layer_data

TRACKS_LAYER, POINTS_LAYER = "tracks", "animals"


class Session:
    """The video being tracked, the settings, the last complete tracking run and identities."""

    changed = Signal()

    def __init__(self) -> None:
        self.settings = Settings()
        self.video: Any = None  # core Video of the tracked layer
        self.video_layer: str = ""
        self.run: Any = None  # core TrackingRun
        self.identities: Any = None  # TrackletIdentities or None before identification
        self.identification: Any = None  # the last IdentificationResult (model, steps)

    @property
    def trained_ranges(self) -> list[tuple[int, int]]:
        """Global segments the last identification trained on (accepted steps)."""
        if self.identification is None:
            return []
        return [tuple(s["range"]) for s in self.identification.steps
                if s.get("status") == "accepted" and "range" in s]

    def set_run(self, run: Any, video: Any, video_layer: str) -> None:
        """A new tracking run replaces the previous one (and its identities)."""
        self.run, self.video, self.video_layer = run, video, video_layer
        self.identities = self.identification = None
        self.changed.emit()

    def set_identification(self, result: Any) -> None:
        self.identification = result
        self.identities = result.identities
        self.changed.emit()

    def clear_identities(self) -> None:
        self.identities = self.identification = None
        self.changed.emit()

    def show_results(self, viewer: Any) -> None:
        """Add or replace the Tracks and Points layers with the session's current results."""
        if self.run is None:
            return
        for data, meta, kind in (tracks_layer_data(self.run, self.identities, TRACKS_LAYER),
                                 points_layer_data(self.run, self.identities, POINTS_LAYER)):
            name = meta["name"]
            index = len(viewer.layers)
            if name in viewer.layers:
                index = viewer.layers.index(name)
                viewer.layers.remove(name)
            layer = getattr(viewer, f"add_{kind}")(data, **meta)
            viewer.layers.move(viewer.layers.index(layer), index)


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> Session:
    """The viewer's session (created on first use; it goes away with the viewer)."""
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]
