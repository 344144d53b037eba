"""Plugins > napari-trex > Tracking: set the parameters, preview the blobs, track.

The panel translates between napari and the core: it reads the chosen image layer's video,
builds :class:`Settings` from the form, runs :func:`core.pipeline.track_video` in a worker
thread (napari's progress bar, Cancel) and hands the finished run to the viewer's
:class:`Session`, which draws the Tracks and Points layers. The preview shows, for the
current frame, what the threshold sees: blobs inside ``blob_size_ranges`` in green (they
will be tracked), too small or too large ones in red.
"""

# no `from __future__ import annotations`: magicgui reads annotations at run time
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton

from ...core.background import background_for, sample_frames
from ...core.detection import (BLOB_KINDS, PREVIEW_ANIMAL, PREVIEW_FRAGMENT, PREVIEW_OUT_OF_RANGE,
                               PREVIEW_SPECK, DetectionParams, blob_census, preview_labels)
from ...core.errors import NapariTrexError
from ...core.pipeline import track_video
from ...core.settings import parameter_info, parameter_names
from ...core.video import ArrayVideo, open_video
from ..session import session_for
from .census import Census
from ..workers import Job, JobPanel, callback_events
from .form import ParameterForm, _scaled, wrapping, write_value

if TYPE_CHECKING:  # pragma: no cover
    import napari

# track_threshold is here because it is a floor under threshold: both change what the preview shows
MAIN_PARAMETERS = ["track_max_individuals", "threshold", "track_threshold", "blob_size_ranges",
                   "track_max_speed",
                   "cm_per_pixel", "averaging_method", "auto_minmax_size", "output_dir"]
ADVANCED_SECTIONS = ("video", "detection", "tracking", "tracklets", "output")
PREVIEW_LAYER = "blob preview"
PREVIEW_SAMPLES = 25  # frames for the preview's quick background


def advanced_parameters() -> list[str]:
    return [n for n in parameter_names() if parameter_info(n)["section"] in ADVANCED_SECTIONS
            and n not in MAIN_PARAMETERS and n not in ("manual_matches", "manual_splits")]


def layer_video(layer: Any) -> Any:
    """The core video behind an image layer: the file our reader opened, else the array."""
    path = layer.metadata.get("path") if layer.metadata else None
    if path:
        return open_video(path, color=False)
    data = layer.data
    if getattr(data, "ndim", 0) not in (3, 4):
        raise NapariTrexError(f"layer '{layer.name}' is not a video (needs time × height × width)")
    return ArrayVideo(data, name=layer.name)


class TrackingWidget(JobPanel, Container):
    """Tracking parameters, a live blob preview, Track and Cancel."""

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self.session = session_for(viewer)
        self.video_layer = ComboBox(label="video", name="video_layer", choices=self._image_layers,
                                    tooltip="The image layer holding the video to track")
        self.form = ParameterForm(MAIN_PARAMETERS, advanced_parameters(), self.session.settings)
        self.preview = CheckBox(value=False, text="preview blobs on the current frame",
                                name="preview",
                                tooltip="Green: blobs that will be tracked; red: outside "
                                "blob_size_ranges. Updates with the frame and the parameters.")
        self.track_button = PushButton(text="Track", name="track")
        self.cancel_button = PushButton(text="Cancel", name="cancel", enabled=False)
        from .census import BlobCensus

        self.census = BlobCensus()
        self.census.setVisible(False)
        self.status = wrapping(Label(value="", name="status"))
        self.units = wrapping(Label(value="", name="units"))
        self.pixel_units = CheckBox(value=False, name="pixel_units",
                                    text="sizes in px², speed in px per frame",
                                    tooltip="Until cm_per_pixel is calibrated, set sizes and speed in "
                                    "what you see: pixels. They are stored in TRex's cm units.")
        self.extend([self.video_layer, self.units, self.pixel_units, self.form, self.preview,
                     Container(widgets=[self.track_button, self.cancel_button], layout="horizontal",
                               labels=False), self.status])
        # the census (a plain Qt widget) right under the preview checkbox
        self.native.layout().insertWidget(self.index(self.preview) + 1, self.census)
        self.job: Job | None = None
        self._drop: tuple[str, ...] = ()  # files of the results folder the user agreed to drop
        self._background: tuple[Any, np.ndarray] | None = None  # (key, image) for the preview
        self._video: tuple[Any, Any] | None = None  # (layer, core video): opened once per layer

        self.track_button.changed.connect(self.start_tracking)
        self.cancel_button.changed.connect(self.cancel)
        self.preview.changed.connect(self.update_preview)
        self.pixel_units.changed.connect(self._units_changed)
        for w in self.form.fields():
            w.changed.connect(self._parameter_changed)
        self.video_layer.changed.connect(self._video_changed)
        viewer.layers.events.inserted.connect(self._refresh_layers)
        viewer.layers.events.removed.connect(self._refresh_layers)
        viewer.dims.events.current_step.connect(self._frame_changed)
        self.session.changed.connect(self._session_changed)
        self._session_changed()  # a results folder opened before this panel

    # -- layers ------------------------------------------------------------------------------------
    def _image_layers(self, *_: Any) -> list[Any]:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)
                and layer.name != PREVIEW_LAYER and layer.ndim >= 3]

    def _session_changed(self, *_: Any) -> None:
        """A results folder opened shows its parameters here; a calibration elsewhere
        (Corrections panel) shows up too."""
        run = self.session.run
        if run is not None and run is not getattr(self, "_run_seen", None):
            self._run_seen = run
            if self.session.output_dir and self.job is None:  # reopened, not tracked here
                self.form.display(self.session.settings)
                for layer in self._image_layers():
                    if (layer.metadata or {}).get("path") == run.video_info.path:
                        self.video_layer.value = layer
        settings = self.session.settings
        field = self.form.field("cm_per_pixel")
        if field.value == settings.cm_per_pixel:
            return
        field.value = settings.cm_per_pixel  # a calibration (Corrections panel), maybe with
        try:  # blob_size_ranges and track_max_speed rescaled to keep their pixel sizes
            shown = self.form.settings(settings)
        except NapariTrexError:
            return
        for name in ("blob_size_ranges", "track_max_speed"):
            if getattr(shown, name) != getattr(settings, name):
                scale = self.form.display_scale.get(name, 1.0)
                write_value(self.form.field(name), _scaled(getattr(settings, name), 1.0 / scale))
        if self.pixel_units.value:
            self._units_changed()
        self._show_units()

    def _refresh_layers(self, *_: Any) -> None:
        self.video_layer.reset_choices()

    def _video_changed(self, *_: Any) -> None:
        self._background = None
        self.update_preview()

    def video_of(self, layer: Any) -> Any:
        """The core video of ``layer``, opened once (the preview reads a frame per step)."""
        if self._video is None or self._video[0] is not layer:
            self._video = (layer, layer_video(layer))
        return self._video[1]

    def _parameter_changed(self, *_: Any) -> None:
        """The form is the session's settings as the user sets them (a calibration in the
        Corrections panel then rescales what is in the form, not what was there before)."""
        try:
            self.session.settings = self.form.settings(self.session.settings)
        except NapariTrexError:
            pass  # a half-typed value: the preview says what is wrong
        self.update_preview()

    def _frame_changed(self, *_: Any) -> None:
        if self.preview.value:
            self.update_preview()

    def current_frame(self) -> int:
        return int(self.viewer.dims.current_step[0])

    # -- preview -----------------------------------------------------------------------------------
    def update_preview(self, *_: Any) -> None:
        """Redraw (or remove) the blob preview of the current frame and the census of the
        sampled frames; say what lengths rest on."""
        self._show_units()
        if not self.preview.value:
            self.census.setVisible(False)
            if PREVIEW_LAYER in self.viewer.layers:
                self.viewer.layers.remove(PREVIEW_LAYER)
            return
        layer = self.video_layer.value
        if layer is None:
            return
        try:
            settings = self.form.settings(self.session.settings)
            video = self.video_of(layer)
            params = DetectionParams.from_settings(settings, video.frame_shape)
            key = (layer.name, settings.averaging_method, settings.background_image,
                   settings.threshold, settings.track_threshold, settings.enable_absolute_difference)
            if self._background is None or self._background[0] != key:
                indices, samples = sample_frames(video, min(settings.average_samples, PREVIEW_SAMPLES))
                self._background = (key, background_for(samples, settings), indices, samples)
            _, background, indices, samples = self._background
            frame_index = min(self.current_frame(), len(video) - 1)
            labels, counts = preview_labels(_grey(video.read(frame_index)), background, params)
            census = Census.of(blob_census(samples, background, params), indices,
                               list(params.size_ranges_px), settings.track_max_individuals)
        except NapariTrexError as exc:
            self.status.value = f"preview: {exc}"
            return
        self.census.update_census(census)
        self.census.setVisible(True)
        effective = max(settings.threshold, settings.track_threshold)
        floor = (f" (track_threshold {settings.track_threshold} is above threshold "
                 f"{settings.threshold}: it decides)"
                 if settings.track_threshold > settings.threshold else "")
        short = (f"; in {census.short_frames} of {len(census.in_range)} sampled frames fewer than "
                 f"{settings.track_max_individuals} animal-sized blobs" if census.short_frames else "")
        self.status.value = (f"frame {frame_index}, threshold {effective}{floor}: "
                             + ", ".join(f"{counts[name]} {name}" for name in BLOB_KINDS.values())
                             + short)
        data = labels  # 2-D: drawn over whichever frame is shown, redrawn when it changes
        if PREVIEW_LAYER in self.viewer.layers:
            self.viewer.layers[PREVIEW_LAYER].data = data
        else:
            from napari.utils.colormaps import DirectLabelColormap

            colours = {0: "transparent", PREVIEW_ANIMAL: "lime", PREVIEW_OUT_OF_RANGE: "red",
                       PREVIEW_FRAGMENT: "orange", PREVIEW_SPECK: "#8080ff", None: "transparent"}
            self.viewer.add_labels(data, name=PREVIEW_LAYER, opacity=0.5,
                                   colormap=DirectLabelColormap(color_dict=colours),
                                   metadata={"napari_trex": "preview"})

    def _units_changed(self, *_: Any) -> None:
        """Show blob_size_ranges in px² and track_max_speed in px/frame, or TRex's cm units."""
        scales: dict[str, float] = {}
        units: dict[str, str] = {}
        layer = self.video_layer.value
        if self.pixel_units.value and layer is not None:
            try:
                settings = self.form.settings(self.session.settings)
                video = self.video_of(layer)
            except NapariTrexError as exc:
                self.status.value = str(exc)
                return
            cm = settings.pixel_size_cm(video.frame_shape[1])
            fps = settings.frame_rate or video.info.fps or 25.0
            scales = {"blob_size_ranges": cm * cm, "track_max_speed": cm * fps}
            units = {"blob_size_ranges": "px²", "track_max_speed": "px/frame"}
        else:
            units = {"blob_size_ranges": "cm²", "track_max_speed": "cm/s"}
        self.form.set_display_units(scales, units)
        self.update_preview()

    def _show_units(self) -> None:
        """While cm_per_pixel is 0 every length rests on an assumed frame width: say so."""
        from ...core.pipeline import units_notice

        layer = self.video_layer.value
        try:
            settings = self.form.settings(self.session.settings)
            video = self.video_of(layer) if layer is not None else None
        except NapariTrexError:
            return
        if video is None:
            self.units.value = ""
            return
        fps = settings.frame_rate or video.info.fps or 25.0
        notice = units_notice(settings, video.frame_shape[1], fps,
                              "calibrate: draw a line over something of known length with the "
                              "Corrections panel's calibration line, or type cm_per_pixel below")
        self.units.value = f"⚠ {notice}" if notice else \
            f"{settings.cm_per_pixel:g} cm per pixel (calibrated)"

    # -- tracking ----------------------------------------------------------------------------------
    def start_tracking(self, *_: Any) -> Job | None:
        """Track the chosen video in a worker; the result replaces the layers on success."""
        from napari.utils.notifications import show_error

        layer = self.video_layer.value
        if layer is None:
            show_error("napari-trex: open a video first (drag it onto napari), then choose it here")
            return None
        try:
            settings = self.form.settings(self.session.settings)
            video = layer_video(layer)
        except NapariTrexError as exc:
            show_error(f"napari-trex: {exc}")
            return None
        if settings.output_dir and not self._may_write(video, settings):
            return None
        self.session.settings = settings
        self._set_running(True)
        self.status.value = "tracking…"
        self.job = Job("tracking",
                       lambda should_stop: callback_events(track_video, video, settings,
                                                           should_stop=should_stop),
                       on_event=self._on_event,
                       on_result=lambda run: self._on_result(run, video, layer.name, settings),
                       on_finish=self._on_finish)
        return self.job.start()

    def _may_write(self, video: Any, settings: Any) -> bool:
        """The results folder takes the results, and what the user made there (corrections,
        identities, a network) is not dropped without a confirmation (the one workflow's checks,
        before the work)."""
        from napari.utils.notifications import show_error

        from ...core.workflow import Project, check_output_folder, plan_run, video_fingerprint

        try:
            folder = check_output_folder(settings.output_dir)
            project = Project.open(folder)
            plan = plan_run(project, video, video_fingerprint(video), settings, retrack=True)
        except (NapariTrexError, OSError) as exc:
            show_error(f"napari-trex: {exc}")
            return False
        if plan.dropping and not self.confirm(
                f"{folder} holds {' and '.join(plan.dropping)}, which {plan.reason}. "
                "Track anyway and drop them?"):
            self.status.value = "not tracked: the results folder keeps what it holds"
            return False
        self._drop = tuple(plan.drop)
        return True

    def confirm(self, question: str) -> bool:  # pragma: no cover - a dialog; tests replace it
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(self.native, "napari-trex", question)
        return answer == QMessageBox.StandardButton.Yes

    def _set_running(self, running: bool) -> None:
        self.track_button.enabled = not running
        self.cancel_button.enabled = running

    def _on_event(self, event: dict[str, Any]) -> None:
        total = event.get("total") or 0
        share = f" {event['done'] / total:.0%}" if total else ""
        self.status.value = f"{event.get('message', '')}{share}"

    def _on_result(self, run: Any, video: Any, layer_name: str, settings: Any) -> None:
        from napari.utils.notifications import show_info

        from napari.utils.notifications import show_error

        from ...core.workflow import video_fingerprint

        run.fingerprint = video_fingerprint(video)
        self.session.set_run(run, video, layer_name, settings.output_dir)  # corrections re-applied
        saved = ""
        if settings.output_dir:
            try:
                self.session.save(settings.output_dir, self._drop)
                saved = f"; saved to {settings.output_dir}"
            except (NapariTrexError, OSError) as exc:
                show_error(f"napari-trex: tracked, but could not save into {settings.output_dir}: "
                           f"{exc}; the results are in the viewer, save them from Corrections")
        self.session.show_results(self.viewer)
        n_tracklets = len(run.result.tracklets)
        message = (f"tracked {run.n_individuals} animals: {n_tracklets} tracklets, "
                   f"{len(run.segments)} global segments{saved}")
        # (the units notice at the top says what lengths rest on, in the panel's words)
        for line in run.auto.describe(units=False):
            message += f"\n{line}"
        self.status.value = message
        # a notification shows one short line: the details (and any warning) are in the panel
        warned = " — see the warning in the Track tab" if run.auto.warnings else ""
        if run.auto.replaced_defaults:  # values measured in place of defaults: say which
            warned = f"; measured, the defaults did not fit: {', '.join(run.auto.replaced_defaults)}" \
                f"{warned or ' (see the Track tab)'}"
        show_info(f"napari-trex: tracked {run.n_individuals} animals, {n_tracklets} tracklets{warned}")
        if settings.track_max_individuals == 0 and run.auto.n_individuals:
            self.form.field("track_max_individuals").value = run.auto.n_individuals
        for name in run.auto.replaced_defaults:  # the fields show what was used, not the default
            self.form.show_value(name, getattr(run.settings, name))

    def _on_finish(self, outcome: str) -> None:
        self._set_running(False)
        if outcome == "cancelled":
            self.status.value = "cancelled; the earlier results are kept"
        elif outcome == "failed":
            self.status.value = "tracking failed (see the notification)"


def _grey(frame: np.ndarray) -> np.ndarray:
    from ...core.video import rgb_to_grey

    return rgb_to_grey(frame) if frame.ndim == 3 else frame


