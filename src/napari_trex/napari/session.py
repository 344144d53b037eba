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

from ..core.corrections import Corrections, CorrectionsRecord
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
        self.weights_path: str = ""  # the trained network of a reopened results folder
        self._record = CorrectionsRecord()  # the user's decisions when no run is being edited

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

    @property
    def record(self) -> CorrectionsRecord:
        """Every correction the user made: kept across retracks and identifications."""
        return self.corrections.record if self.corrections is not None else self._record.copy()

    def _apply_record(self, identities: Any) -> None:
        """Re-apply the user's corrections to the current run (after a retrack or an
        identification), and start editing from there."""
        from ..core.workflow import apply_corrections

        record = self.record
        self._record = record
        if len(record):
            identities, edited, _ = apply_corrections(self.run, identities, record)
        else:
            edited = None
        self.identities = identities
        self.corrections = Corrections.start(self.run.result, identities, record=record)
        if edited is not None:
            self.corrections.edited = edited.copy()

    def set_run(self, run: Any, video: Any, video_layer: str, output_dir: str = "") -> None:
        """A new tracking run replaces the previous one; the user's corrections (and those in
        its settings: manual_matches) are applied to it at once."""
        self._record = self.record.merged(CorrectionsRecord.from_settings(run.settings))
        self.run, self.video, self.video_layer = run, video, video_layer
        self.output_dir = output_dir or run.settings.output_dir
        self.identification = None
        self._apply_record(None)
        if not len(self._record):
            self.identities = None
        self.changed.emit()

    def set_identification(self, result: Any) -> None:
        self.identification = result
        self._apply_record(result.identities)
        self.changed.emit()

    def clear_identities(self) -> None:
        self._record = self.record
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
        """Resume from a results folder, whole: tracking, identities, corrections, parameters,
        the trained network."""
        from ..core.workflow import Project

        project = Project.open(folder)
        if project.run is None:
            from ..core.errors import NapariTrexError

            raise NapariTrexError(f"{folder} holds no tracking run")
        try:
            video = project.video()
        except Exception:  # noqa: BLE001 - the results are still worth showing without it
            video = None
        run = project.run
        folder = Path(folder).resolve()
        self.run, self.video, self.output_dir = run, video, str(folder)
        self.video_layer = Path(run.video_info.path).stem
        self.settings = run.settings.updated(output_dir=str(folder))
        self.identification = None
        self.weights_path = str(project.weights) if project.weights is not None else ""
        self.identities = project.identities
        self._record = project.corrections
        self.corrections = Corrections.start(run.result, project.identities, record=project.corrections)
        if project.edited is not None and len(project.edited) == len(run.result.tracklets):
            self.corrections.edited = project.edited.copy()
        self.changed.emit()

    def save(self, folder: str | Path | None = None, drop: tuple[str, ...] = ()) -> Path:
        """Write the run with the current identities and corrections into the results folder
        (the one workflow's save: all or nothing, the network kept)."""
        from ..core.errors import NapariTrexError
        from ..core.workflow import Outcome, save

        target = Path(folder or self.output_dir or "")
        if not str(folder or self.output_dir):
            raise NapariTrexError("choose a results folder first (output_dir)")
        save(target, Outcome(self.run, self.identification, self.identities, self.edited,
                             self.record), drop)
        self.output_dir = str(target)
        return target

    def adopt(self, layer: Any) -> bool:
        """Load the results folder behind a Tracks or Points layer of ours (once)."""
        meta = getattr(layer, "metadata", {}) or {}
        folder = meta.get("output_dir") if meta.get("napari_trex") in ("tracks", "animals") else None
        if not folder or not (Path(folder) / "run.json").is_file():
            return False
        if self.run is not None:
            return False  # a run is open (maybe with unsaved edits): never replaced silently
        from ..core.errors import NapariTrexError

        try:
            self.load_output(folder)
        except NapariTrexError as exc:
            from napari.utils.notifications import show_error

            show_error(f"napari-trex: {exc}")
            return False
        return True

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
    """The viewer's session (created on first use; it goes away with the viewer).

    A results folder dropped on the viewer (or opened with ``napari-trex view DIR``) is
    loaded into the session as soon as any napari-trex panel exists, whichever it is, so the
    Timeline, Dataset and Identification panels show it without opening Corrections first.
    """
    if viewer not in _SESSIONS:
        session = _SESSIONS[viewer] = Session()
        ref = weakref.ref(session)
        viewer.layers.events.inserted.connect(
            lambda event: ref() is not None and ref().adopt(event.value))
        for layer in list(viewer.layers):
            session.adopt(layer)
    return _SESSIONS[viewer]
