"""Plugins > napari-trex > Corrections: check and fix identities, save, export, reuse settings.

Click an animal to select its tracklet (a white ring follows it). Then give it another
identity (number keys or the dropdown; the animal that had it in those frames gets the old
one), split its tracklet at the current frame, or mark it as not an animal. Step through the
animal's tracklet ends, or through the review queue (least confident tracklets first). Every
edit is visible at once (diamonds mark edited animals), undoable (Ctrl+Z / Ctrl+Shift+Z), and
recorded as TRex's ``manual_matches`` / ``manual_splits`` so the next tracking or
identification run applies it first. The edits live in :class:`core.corrections.Corrections`;
this panel only turns clicks and keys into calls and results into layers.
"""

# no `from __future__ import annotations`: napari injects the viewer by the annotation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label,
                              PushButton)

from ...core.errors import NapariTrexError
from .. import keybindings
from ..layers import SELECTION_SCALE, marker_size
from ..session import session_for
from .form import wrapping

if TYPE_CHECKING:  # pragma: no cover
    import napari

SELECTION_LAYER = "selected animal"
CALIBRATION_LAYER = "calibration"


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(f"napari-trex: {message}")


def _notify(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(f"napari-trex: {message}")


class CorrectionsWidget(Container):
    """Selection, edits with undo/redo, review queue, save / export / save config, calibration."""

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self.session = session_for(viewer)
        self.selected: int | None = None
        self._review_position = -1
        self.click_select = CheckBox(value=True, text="click an animal to select it", name="click_select")
        self.info = wrapping(Label(value="", name="info"))
        self.identity = ComboBox(label="identity", name="identity", choices=self._identity_choices)
        self.assign_button = PushButton(text="Assign", name="assign")
        self.split_button = PushButton(text="Split here", name="split")
        self.remove_button = PushButton(text="Not an animal", name="remove")
        self.previous_button = PushButton(text="◀ tracklet end", name="previous_end")
        self.next_button = PushButton(text="tracklet end ▶", name="next_end")
        self.review_button = PushButton(text="Next to review", name="next_review")
        self.undo_button = PushButton(text="Undo", name="undo")
        self.redo_button = PushButton(text="Redo", name="redo")
        self.folder = FileEdit(mode="d", label="results folder", name="folder")
        self.save_button = PushButton(text="Save results", name="save")
        self.export_button = PushButton(text="Export trajectories", name="export")
        self.config = FileEdit(mode="w", label="config file", name="config", filter="*.toml")
        self.config_button = PushButton(text="Save config", name="save_config")
        self.length_cm = FloatSpinBox(value=10.0, min=0.001, max=1e6, step=0.1, label="line length (cm)",
                                      name="length_cm")
        self.draw_button = PushButton(text="Draw calibration line", name="draw_line")
        self.calibrate_button = PushButton(text="Set cm_per_pixel", name="calibrate")
        self.keys = wrapping(Label(value=keybindings.describe(), name="keys"))

        def row(*widgets: Any) -> Container:
            return Container(widgets=list(widgets), layout="horizontal", labels=False)

        self.extend([
            self.click_select, self.info,
            Container(widgets=[self.identity], labels=True), row(self.assign_button, self.split_button,
                                                                 self.remove_button),
            row(self.previous_button, self.next_button, self.review_button),
            row(self.undo_button, self.redo_button),
            Container(widgets=[self.folder], labels=True), row(self.save_button, self.export_button),
            Container(widgets=[self.config], labels=True), row(self.config_button),
            Container(widgets=[self.length_cm], labels=True), row(self.draw_button, self.calibrate_button),
            self.keys,
        ])
        self.actions = {
            **{f"assign_{k}": (lambda k=k: self.assign(k)) for k in range(10)},
            "split": self.split, "remove": self.remove, "previous_end": lambda: self.step_end(False),
            "next_end": lambda: self.step_end(True), "next_review": self.next_review,
            "undo": self.undo, "redo": self.redo,
        }
        for button, action in ((self.split_button, "split"), (self.remove_button, "remove"),
                               (self.previous_button, "previous_end"), (self.next_button, "next_end"),
                               (self.review_button, "next_review"), (self.undo_button, "undo"),
                               (self.redo_button, "redo")):
            button.changed.connect(lambda *_, a=action: self.actions[a]())
        self.assign_button.changed.connect(lambda *_: self.identity.value is not None
                                           and self.assign(int(self.identity.value)))
        self.save_button.changed.connect(self.save)
        self.export_button.changed.connect(self.export)
        self.config_button.changed.connect(self.save_config)
        self.draw_button.changed.connect(self.draw_calibration_line)
        self.calibrate_button.changed.connect(self.calibrate)
        keybindings.bind(viewer, self.actions)
        self.session.layers_replaced.connect(self._bind_layers)
        self.session.changed.connect(self._session_changed)
        viewer.mouse_drag_callbacks.append(self._on_click)
        viewer.layers.events.inserted.connect(self._layer_inserted)
        for layer in list(viewer.layers):
            self._adopt(layer)
        self._session_changed()

    # -- session and layers --------------------------------------------------------------------------
    def _identity_choices(self, *_: Any) -> list[int]:
        run = self.session.run
        return list(range(run.n_individuals)) if run is not None else []

    def _bind_layers(self, layers: tuple) -> None:
        for layer in layers:
            keybindings.bind(layer, self.actions)

    def _layer_inserted(self, event: Any) -> None:
        self._adopt(event.value)

    def _adopt(self, layer: Any) -> None:
        """Results opened from a folder (or a saved tracks file next to one) become editable."""
        meta = getattr(layer, "metadata", {}) or {}
        if meta.get("napari_trex") in ("tracks", "animals"):
            keybindings.bind(layer, self.actions)
            self.session.adopt(layer)

    def _session_changed(self, *_: Any) -> None:
        self.identity.reset_choices()
        if self.session.output_dir and not str(self.folder.value).strip(". "):
            self.folder.value = self.session.output_dir
        if self.session.run is not getattr(self, "_run_seen", None):  # a new run: new tracklet ids
            self._run_seen = self.session.run
            self.selected = None
            self._review_position = -1
        self._show_selection()

    def _refresh(self) -> None:
        self.session.edits_changed()
        self.session.show_results(self.viewer)
        self._show_selection()

    # -- selection -----------------------------------------------------------------------------------
    def _on_click(self, viewer: Any, event: Any) -> Any:
        if not self.click_select.value or self.session.run is None:
            return
        position = np.asarray(event.position)
        yield
        dragged = False
        while event.type == "mouse_move":
            dragged = True
            yield
        if not dragged:
            self.select_at(position[-1], position[-2])

    def select_at(self, x: float, y: float) -> int | None:
        """Select the animal nearest to (x, y) in the current frame (what a click does)."""
        if self.session.run is None:
            return None
        frame = self.current_frame()
        reach = 2.0 * np.sqrt(np.median(self.session.run.result.detections["area"])) \
            if len(self.session.run.result.detections["area"]) else 50.0
        self.selected = self.session.edit().tracklet_at(frame, x, y, max_distance=reach)
        self._show_selection()
        return self.selected

    def select(self, tracklet: int | None) -> None:
        self.selected = tracklet
        self._show_selection()

    def current_frame(self) -> int:
        return int(self.viewer.dims.current_step[0])

    def _show_selection(self) -> None:
        run = self.session.run
        if self.selected is None or run is None:
            self.info.value = "No animal selected: click one in the viewer." if run is not None \
                else "Track a video or open a results folder first."
            if SELECTION_LAYER in self.viewer.layers:
                self.viewer.layers.remove(SELECTION_LAYER)
            return
        c = self.session.edit()
        tid = self.selected
        t = c.result.tracklets
        ident = int(c.identities.identity[tid])
        who = f"identity {ident}" if ident >= 0 else "no identity"
        if c.identities.source[tid] == "removed":
            who = "not an animal"
        self.info.value = (f"Selected: tracklet {tid}, {who} ({c.identities.source[tid] or 'tracking'}"
                           f", confidence {c.identities.probability[tid]:.2f}), frames {t.start[tid]}–"
                           f"{t.end[tid]}" + (" — edited" if c.edited[tid] else ""))
        if ident >= 0:
            self.identity.value = ident
        slot = int(t.individual[tid])
        frames = np.arange(t.start[tid], t.end[tid] + 1)
        rows = c.result.assignment[frames, slot]
        mine = (c.result.tracklet_of[frames, slot] == tid) & (rows >= 0)
        det = c.result.detections
        data = np.column_stack([frames[mine], det["y"][rows[mine]], det["x"][rows[mine]]])
        size = SELECTION_SCALE * marker_size(det["area"])
        if SELECTION_LAYER in self.viewer.layers:
            self.viewer.layers[SELECTION_LAYER].data = data
        else:
            active = self.viewer.layers.selection.active
            layer = self.viewer.add_points(data, name=SELECTION_LAYER, symbol="disc", size=size,
                                           face_color="transparent", border_color="white",
                                           border_width=0.12, metadata={"napari_trex": "selection"})
            keybindings.bind(layer, self.actions)
            if active is not None:  # keep working on the layer the user had chosen
                self.viewer.layers.selection.active = active

    # -- edits -------------------------------------------------------------------------------------------
    def _guard(self) -> bool:
        if self.session.run is None:
            _notify_error("track a video or open a results folder first")
            return False
        if self.selected is None:
            _notify_error("select an animal first (click it in the viewer)")
            return False
        return True

    def assign(self, identity: int) -> None:
        if not self._guard():
            return
        try:
            self.session.edit().reassign(self.selected, identity, self.current_frame())
        except NapariTrexError as exc:
            _notify_error(str(exc))
            return
        self._refresh()

    def split(self) -> None:
        if not self._guard():
            return
        try:
            self.selected = self.session.edit().split(self.selected, self.current_frame())
        except NapariTrexError as exc:
            _notify_error(str(exc))
            return
        self._refresh()

    def remove(self) -> None:
        if not self._guard():
            return
        self.session.edit().remove(self.selected)
        self._refresh()

    def undo(self) -> None:
        if self.session.run is None or not self.session.edit().undo():
            _notify("nothing to undo")
            return
        self._refresh()

    def redo(self) -> None:
        if self.session.run is None or not self.session.edit().redo():
            _notify("nothing to redo")
            return
        self._refresh()

    # -- navigation ----------------------------------------------------------------------------------
    def step_end(self, forward: bool) -> None:
        if not self._guard():
            return
        frame = self.session.edit().next_boundary(self.selected, self.current_frame(), forward)
        if frame is None:
            _notify("no further tracklet end for this animal")
            return
        self.viewer.dims.set_current_step(0, frame)

    def next_review(self) -> None:
        """Jump to the next tracklet of the review queue (least confident first) and select it."""
        if self.session.run is None:
            _notify_error("track a video or open a results folder first")
            return
        queue = self.session.edit().review_queue()
        if not queue:
            _notify("nothing left to review")
            return
        self._review_position = (self._review_position + 1) % len(queue)
        tid = queue[self._review_position]
        self.viewer.dims.set_current_step(0, int(self.session.edit().result.tracklets.start[tid]))
        self.select(tid)

    # -- files ---------------------------------------------------------------------------------------
    def _folder(self) -> Path | None:
        text = str(self.folder.value).strip()
        if text in ("", "."):
            _notify_error("choose a results folder first")
            return None
        return Path(text)

    def save(self, *_: Any) -> None:
        folder = self._folder()
        if folder is None or self.session.run is None:
            return
        try:
            self.session.save(folder)
        except (NapariTrexError, OSError) as exc:
            _notify_error(f"could not save into {folder}: {exc}; the previous results are intact")
            return
        _notify(f"saved the results with your corrections into {folder}")

    def export(self, *_: Any) -> list[Path]:
        from ...core.export import export_trajectories

        folder = self._folder()
        if folder is None or self.session.run is None:
            return []
        try:
            written = export_trajectories(self.session.run, folder, self.session.identities,
                                          self.session.edited)
        except (NapariTrexError, OSError) as exc:
            _notify_error(f"export failed: {exc}")
            return []
        _notify(f"exported {len(written)} files into {folder / 'data'}")
        return written

    def save_config(self, *_: Any) -> None:
        text = str(self.config.value).strip()
        if text in ("", "."):
            _notify_error("choose where to save the config (a .toml file)")
            return
        settings = self.session.run.settings if self.session.run is not None else self.session.settings
        try:
            path = settings.save(Path(text).with_suffix(".toml"))
        except (NapariTrexError, OSError) as exc:
            _notify_error(f"could not save the config: {exc}")
            return
        _notify(f"saved the settings to {path}: napari-trex batch VIDEOS --settings {path.name}")

    def draw_calibration_line(self, *_: Any) -> None:
        if CALIBRATION_LAYER not in self.viewer.layers:
            self.viewer.add_shapes(name=CALIBRATION_LAYER, edge_color="yellow", edge_width=3,
                                   ndim=2)
        layer = self.viewer.layers[CALIBRATION_LAYER]
        self.viewer.layers.selection.active = layer
        layer.mode = "add_line"
        _notify("draw a line over something of known length, enter the length, press Set cm_per_pixel")

    def calibrate(self, *_: Any) -> float | None:
        from ...core.export import cm_per_pixel_from_line

        layer = self.viewer.layers[CALIBRATION_LAYER] if CALIBRATION_LAYER in self.viewer.layers else None
        lines = [np.asarray(d) for d, kind in zip(layer.data, layer.shape_type) if kind == "line"] \
            if layer is not None else []
        if not lines:
            _notify_error("draw a calibration line first (Draw calibration line)")
            return None
        (y0, x0), (y1, x1) = lines[-1][0][-2:], lines[-1][1][-2:]
        try:
            value = cm_per_pixel_from_line((x0, y0), (x1, y1), float(self.length_cm.value))
        except NapariTrexError as exc:
            _notify_error(str(exc))
            return None
        settings = self.session.settings
        width = self._video_width()
        old = settings.pixel_size_cm(width) if width else 0.0
        changes: dict[str, Any] = {"cm_per_pixel": value}
        rescaled = ""
        if old > 0 and abs(value / old - 1) > 1e-6 and self.confirm(
                f"cm_per_pixel is now {value:.5g} (it was {old:.5g}"
                f"{' assumed' if settings.cm_per_pixel == 0 else ''}). Rescale blob_size_ranges "
                "and track_max_speed so that they keep their size in pixels? (TRex does)"):
            ratio = value / old
            changes["blob_size_ranges"] = [(lo * ratio ** 2, hi * ratio ** 2)
                                           for lo, hi in settings.blob_size_ranges]
            changes["track_max_speed"] = settings.track_max_speed * ratio
            rescaled = "; blob_size_ranges and track_max_speed rescaled to keep their pixel sizes"
        self.session.settings = settings.updated(**changes)
        if self.session.run is not None:  # what the exports use (the run's tracking is done)
            self.session.run.settings = self.session.run.settings.updated(cm_per_pixel=value)
        self.session.changed.emit()
        _notify(f"cm_per_pixel = {value:.5g} (used by the next tracking run and the exports)"
                + rescaled)
        return value

    def _video_width(self) -> int:
        if self.session.run is not None:
            return int(self.session.run.video_info.width)
        if self.session.video is not None:
            return int(self.session.video.frame_shape[1])
        return 0

    def confirm(self, question: str) -> bool:  # pragma: no cover - a dialog; tests replace it
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(self.native, "napari-trex", question)
        return answer == QMessageBox.StandardButton.Yes
