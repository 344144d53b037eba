"""The state napari-trex keeps per viewer, shared by its panels.

Panels never talk to each other: the tracking panel puts a run here, the identification
panel puts identities here, the corrections panel edits them here, and every panel (and the
result layers) redraws on :attr:`Session.changed`. One session per viewer, found with
:func:`session_for`. Corrections are recorded in the settings (``manual_matches``,
``manual_splits``), so the next tracking or identification run applies them first.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal

from ..core.corrections import Corrections, apply_manual
from ..core.settings import Settings
from .layers import points_layer_data, results_metadata, tracks_layer_data

TRACKS_LAYER, POINTS_LAYER = "tracks", "animals"


class Session:
    """The video being tracked, the settings, the last complete run, identities, corrections."""

    changed = Signal()
    layers_replaced = Signal(object)  # the new (tracks, points) layers, e.g. to bind keys on them

    def __init__(self) -> None:
        self.settings = Settings()
        self.video: Any = None  # core Video of the tracked layer
        self.video_layer: str = ""
        self.run: Any = None  # core TrackingRun
        self.identities: Any = None  # TrackletIdentities or None before identification
        self.identification: Any = None  # the last IdentificationResult (model, steps)
        self.corrections: Corrections | None = None
        self.output_dir: str = ""

    @property
    def trained_ranges(self) -> list[tuple[int, int]]:
        """Global segments the last identification trained on (accepted steps)."""
        if self.identification is None:
            return []
        return [tuple(s["range"]) for s in self.identification.steps
                if s.get("status") == "accepted" and "range" in s]

    @property
    def edited(self) -> np.ndarray | None:
        return None if self.corrections is None else self.corrections.edited

    def set_run(self, run: Any, video: Any, video_layer: str, output_dir: str = "") -> None:
        """A new tracking run replaces the previous one; corrections in its settings
        (manual_matches) are applied to it at once."""
        self.run, self.video, self.video_layer = run, video, video_layer
        self.output_dir = output_dir or run.settings.output_dir
        self.identification = None
        self.identities = None
        self.corrections = None
        if run.settings.manual_matches:
            self.identities = apply_manual(run.result, None, run.settings)
            self.corrections = Corrections.start(run.result, self.identities, run.settings)
            self.corrections.edited = self.identities.source == "manual"
        self.changed.emit()

    def set_identification(self, result: Any) -> None:
        self.identification = result
        self.identities = result.identities
        self.corrections = None
        self.changed.emit()

    def clear_identities(self) -> None:
        self.identities = self.identification = self.corrections = None
        self.changed.emit()

    # -- corrections ---------------------------------------------------------------------------------
    def edit(self) -> Corrections:
        """The corrections of the current run (started on first use)."""
        if self.corrections is None:
            self.corrections = Corrections.start(self.run.result, self.identities, self.run.settings)
        return self.corrections

    def edits_changed(self) -> None:
        """After an edit, undo or redo: the run, identities and settings follow the corrections."""
        c = self.corrections
        self.run.result = c.result
        self.identities = c.identities
        self.run.settings = c.settings(self.run.settings)
        self.settings = c.settings(self.settings)
        self.changed.emit()

    def load_output(self, folder: str | Path) -> None:
        """Resume from a results folder: tracking, identities and corrections."""
        from ..core.results import load_identities_and_edits, load_tracking
        from ..core.video import open_video

        run = load_tracking(folder)
        identities, edited = load_identities_and_edits(folder)
        video = open_video(run.video_info.path) if Path(run.video_info.path).exists() else None
        self.run, self.video, self.output_dir = run, video, str(folder)
        self.settings = run.settings
        self.identification = None
        self.identities = identities
        self.corrections = Corrections.start(run.result, identities, run.settings)
        if edited is not None and len(edited) == len(run.result.tracklets):
            self.corrections.edited = edited.copy()
        self.changed.emit()

    def save(self, folder: str | Path | None = None) -> Path:
        """Write the run with the current identities and corrections into the results folder."""
        from ..core.errors import NapariTrexError
        from ..core.results import save_tracking

        target = Path(folder or self.output_dir or "")
        if not str(folder or self.output_dir):
            raise NapariTrexError("choose a results folder first (output_dir)")
        save_tracking(self.run, target, self.identification if self.corrections is None else None,
                      identities=self.identities, edited=self.edited, settings=self.run.settings)
        self.output_dir = str(target)
        return target

    # -- layers --------------------------------------------------------------------------------------
    def layer_data(self) -> list[tuple[Any, dict[str, Any], str]]:
        meta = {kind: results_metadata(self.run, kind, self.output_dir) for kind in ("tracks", "animals")}
        return [tracks_layer_data(self.run, self.identities, TRACKS_LAYER, self.edited, meta["tracks"]),
                points_layer_data(self.run, self.identities, POINTS_LAYER, self.edited, meta["animals"])]

    def show_results(self, viewer: Any) -> None:
        """Add or replace the Tracks and Points layers with the session's current results."""
        if self.run is None:
            return
        added = []
        for data, meta, kind in self.layer_data():
            name = meta["name"]
            index = len(viewer.layers)
            visible = True
            if name in viewer.layers:
                index = viewer.layers.index(name)
                visible = viewer.layers[name].visible
                viewer.layers.remove(name)
            layer = getattr(viewer, f"add_{kind}")(data, visible=visible, **meta)
            viewer.layers.move(viewer.layers.index(layer), index)
            added.append(layer)
        self.layers_replaced.emit(tuple(added))


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> Session:
    """The viewer's session (created on first use; it goes away with the viewer)."""
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]
