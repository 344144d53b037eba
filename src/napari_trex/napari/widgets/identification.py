"""Plugins > napari-trex > Visual identification: learn what each animal looks like.

Tracking alone loses identities at every crossing; this panel trains a small network on
crops of each animal from the best global segment (all animals visible, each inside one
tracklet), adds further segments while the *uniqueness* (how confidently the network tells
the animals in a frame apart) rises, and then gives every tracklet an identity. Training
runs in a worker thread with a live plot of uniqueness; Cancel keeps the earlier results.

Start trains from scratch; Continue starts from the last network of this session; Apply
only predicts with it without training; Restart first discards the current identities.
"""

# no `from __future__ import annotations`: magicgui reads annotations at run time
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, Label, PushButton
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from ...core.errors import NapariTrexError
from ...core.settings import parameter_info, parameter_names
from ..session import session_for
from ..workers import Job, JobPanel
from .form import ParameterForm, wrapping

if TYPE_CHECKING:  # pragma: no cover
    import napari

MAIN_PARAMETERS = ["gpu_accepted_uniqueness", "gpu_max_epochs", "gpu_max_sample_gb",
                   "recognition_image_size", "recognition_image_scale",
                   "recognition_save_training_images"]
EXPLANATION = ("Learns each animal's appearance from the best global segment (every animal "
               "visible, each in one tracklet), adds segments until the uniqueness reaches "
               "gpu_accepted_uniqueness (0 = automatic), then gives every tracklet an identity. "
               "Groups never or rarely all apart (global segments hold under a quarter of the "
               "video): it learns from tracklet pairs instead.")


def device_text(preference: str = "automatic") -> str:
    """Where training will run, in plain words (or why the requested device is missing)."""
    from ...core.identification.network import choose_device, device_in_words

    try:
        return device_in_words(choose_device(preference))
    except NapariTrexError as exc:
        return str(exc)


class UniquenessPlot(QWidget):
    """Uniqueness per epoch (line), each step's result (green accepted, red rejected) and the
    target (dashed)."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[float] = []
        self.steps: list[tuple[int, float, bool]] = []  # (epoch index, uniqueness, accepted)
        self.target = 0.0
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setObjectName("napari_trex_uniqueness_plot")

    def clear(self, target: float = 0.0) -> None:
        self.epochs, self.steps, self.target = [], [], target
        self.update()

    def add_epoch(self, value: float) -> None:
        self.epochs.append(float(value))
        self.update()

    def add_step(self, value: float, accepted: bool) -> None:
        self.steps.append((max(0, len(self.epochs) - 1), float(value), bool(accepted)))
        self.update()

    def value_range(self) -> tuple[float, float]:
        """The y range in use: from a little below the lowest value (or the target) to 1, so
        that 0.937 and 0.952 do not look alike and the target line is always in view."""
        values = [*self.epochs, *(u for _, u, _ in self.steps)] + ([self.target] if self.target else [])
        if not values:
            return 0.0, 1.0
        low = min(values)
        span = max(1.0 - low, 0.02)
        return max(0.0, low - 0.15 * span), 1.0

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(38, 41, 48))
        left, top, right, bottom = 34, 8, self.width() - 8, self.height() - 18
        lo, hi = self.value_range()
        p.setPen(QColor(200, 200, 200))
        p.drawText(QPointF(2, top + 8), f"{hi:.2f}")
        p.drawText(QPointF(2, bottom), f"{lo:.2f}")
        p.drawText(QRectF(left, bottom + 2, right - left, 16), Qt.AlignmentFlag.AlignCenter,
                   f"epochs ({len(self.epochs)}) — uniqueness per epoch, dots: steps")
        p.drawRect(QRectF(left, top, right - left, bottom - top))
        n = max(2, len(self.epochs))

        def point(i: float, u: float) -> QPointF:
            return QPointF(left + i / (n - 1) * (right - left),
                           bottom - (u - lo) / (hi - lo) * (bottom - top))

        if self.target > 0:
            p.setPen(QPen(QColor(255, 200, 0), 1, Qt.PenStyle.DashLine))
            p.drawLine(point(0, self.target), point(n - 1, self.target))
        p.setPen(QPen(QColor(90, 170, 255), 2))
        for i in range(1, len(self.epochs)):
            p.drawLine(point(i - 1, self.epochs[i - 1]), point(i, self.epochs[i]))
        for i, u, ok in self.steps:
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(40, 210, 40) if ok else QColor(230, 50, 50))
            p.drawEllipse(point(i, u), 4, 4)
        p.end()


class IdentificationWidget(JobPanel, Container):
    """Parameters, device, Start / Continue / Apply only / Restart / Cancel, live plot."""

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self.session = session_for(viewer)
        advanced = [n for n in parameter_names() if parameter_info(n)["section"] == "identification"
                    and n not in MAIN_PARAMETERS]
        self.explanation = wrapping(Label(value=EXPLANATION, name="explanation"))
        self.device = wrapping(Label(value=f"compute device: {device_text()}", name="device"))
        self.form = ParameterForm(MAIN_PARAMETERS, advanced, self.session.settings)
        self.start_button = PushButton(text="Start", name="start",
                                       tooltip="Train a new network from the best global segment")
        self.continue_button = PushButton(text="Continue", name="continue_",
                                          tooltip="Go on training the last network of this session")
        self.apply_button = PushButton(text="Apply only", name="apply_only",
                                       tooltip="Assign identities with the last network, no training")
        self.restart_button = PushButton(text="Restart", name="restart",
                                         tooltip="Discard the current identities, then train anew")
        self.cancel_button = PushButton(text="Cancel", name="cancel", enabled=False)
        self.status = wrapping(Label(value="", name="status"))
        self.plot = UniquenessPlot()
        buttons = Container(widgets=[self.start_button, self.continue_button, self.apply_button,
                                     self.restart_button, self.cancel_button],
                            layout="horizontal", labels=False)
        self.extend([self.explanation, self.device, self.form, buttons, self.status])
        self.native.layout().addWidget(self.plot)
        self.job: Job | None = None
        self.accepted = self.rejected = 0
        self.path = ""
        self.start_button.changed.connect(lambda *_: self.start("start"))
        self.continue_button.changed.connect(lambda *_: self.start("continue"))
        self.apply_button.changed.connect(lambda *_: self.start("apply"))
        self.restart_button.changed.connect(lambda *_: self.start("restart"))
        self.cancel_button.changed.connect(self.cancel)

    def start(self, mode: str) -> Job | None:
        """``mode``: start, continue, apply or restart."""
        from napari.utils.notifications import show_error

        from ...core.identification.pipeline import identify_events

        session = self.session
        if session.run is None or session.video is None:
            show_error("napari-trex: track the video first (the Track tab, or Plugins > napari-trex > Tracking)")
            return None
        previous = session.identification.model if session.identification is not None else \
            (session.weights_path or None)  # the network of a reopened results folder
        if mode in ("continue", "apply") and previous is None:
            show_error("napari-trex: there is no trained network yet in this session: press Start")
            return None
        try:
            settings = self.form.settings(session.run.settings)
        except NapariTrexError as exc:
            show_error(f"napari-trex: {exc}")
            return None
        if mode == "restart":
            session.clear_identities()
            session.show_results(self.viewer)
        run, video = session.run, session.video
        weights = previous if mode in ("continue", "apply") else None
        self.plot.clear(settings.accepted_uniqueness(run.n_individuals))
        self.accepted = self.rejected = 0
        self.path = ""  # how identification started, when not from a global segment
        self._set_running(True)
        self.status.value = "preparing images…"
        self.job = Job("identification",
                       lambda should_stop: identify_events(run, video, settings, weights=weights,
                                                           apply_only=mode == "apply",
                                                           should_stop=should_stop),
                       on_event=self._on_event,
                       on_result=lambda result: self._on_result(result, settings),
                       on_finish=self._on_finish)
        return self.job.start()

    def _set_running(self, running: bool) -> None:
        for b in (self.start_button, self.continue_button, self.apply_button, self.restart_button):
            b.enabled = not running
        self.cancel_button.enabled = running

    def _on_event(self, event: dict[str, Any]) -> None:
        stage = event.get("stage")
        if stage == "epoch":
            self.plot.add_epoch(event["uniqueness"])
        elif stage in ("step", "loaded") and "uniqueness" in event:
            accepted = bool(event.get("accepted", True))
            self.accepted += accepted
            self.rejected += not accepted
            if stage == "loaded":
                self.plot.add_epoch(event["uniqueness"])
            self.plot.add_step(event["uniqueness"], accepted)
        elif stage == "step":
            self.rejected += 1
        elif stage == "path" and event.get("path") == "pairs":
            self.path = event["message"]  # stays on show: the user must know why no segments
        elif stage == "warning":
            from napari.utils.notifications import show_warning

            show_warning(f"napari-trex: {event['message'].removeprefix('WARNING: ')}")
        counts = self.path or f"segments accepted {self.accepted}, rejected {self.rejected}"
        share = f" ({event['done']:.0f}/{event['total']:.0f})" if event.get("total") else ""
        self.status.value = f"{event.get('message', '').strip()}{share}\n{counts}"

    def _on_result(self, result: Any, settings: Any) -> None:
        from napari.utils.notifications import show_error, show_info

        session = self.session
        session.set_identification(result)  # the user's corrections are re-applied on top
        saved = ""
        if settings.output_dir:
            try:
                session.save(settings.output_dir)
                saved = f"; saved to {settings.output_dir}"
            except (NapariTrexError, OSError) as exc:
                show_error(f"napari-trex: identified, but could not save into "
                           f"{settings.output_dir}: {exc}; save from Corrections")
        session.show_results(self.viewer)
        from ...core.identification.assignment import hidden_positions, identity_coverage
        from ...core.identification.pipeline import uniqueness_text
        from ...core.identification.training import holdout_text
        from ...core.results import max_speed_px

        run = session.run
        hidden = hidden_positions(run.result, session.identities, run.n_individuals, run.fps,
                                  max_speed_px(run))
        coverage = identity_coverage(run.result, session.identities, run.n_individuals, hidden)
        how = ", ".join(f"{name} {value:.1%}" for name, value in coverage.items()
                        if name != "all" and value > 0)
        shown = uniqueness_text(result.uniqueness, result.uniqueness_all_frames,
                                result.uniqueness_with_parts)
        message = (f"identification done: {shown}\n"
                   f"{coverage['all']:.1%} of the {run.n_individuals} x {len(run.result.assignment)} "
                   f"animal-frames have an identity ({how or 'none'}){saved}")
        checked = holdout_text(result.holdout)
        if checked:
            message += f"\n{checked}"  # which animals to check first on the timeline
        self.status.value = message
        # a notification shows one short line: the details are in the panel
        show_info(f"napari-trex: identified (uniqueness {result.uniqueness:.3f})")

    def _on_finish(self, outcome: str) -> None:
        self._set_running(False)
        if outcome == "cancelled":
            self.status.value = "cancelled; the earlier identities are kept"
