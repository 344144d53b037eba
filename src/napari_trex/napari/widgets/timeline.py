"""Plugins > napari-trex > Timeline: every individual's tracklets as bars over the video.

One row per individual (identity after identification, tracking slot before), a bar per
tracklet in its colour, global segments as bands behind the bars (the best-quality one in
green, the ones identification trained on in red), and a cursor at the current frame.
Clicking jumps the viewer to that frame; hovering a bar says why that tracklet ended.
The picture is painted from :func:`napari_trex.napari.models.timeline` (no Qt there).
"""

# no `from __future__ import annotations`: napari injects the viewer by the annotation

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QToolTip, QWidget

from ..models import Timeline, timeline
from ..session import session_for

if TYPE_CHECKING:  # pragma: no cover
    import napari

LABEL_WIDTH = 90
ROW_HEIGHT = 18
TOP = 16  # room for the frame axis
SEGMENT_COLOURS = {"best": QColor(40, 200, 40, 90), "trained": QColor(220, 40, 40, 80),
                   "other": QColor(160, 160, 160, 45)}


class TimelineWidget(QWidget):
    """The tracklets of each individual against time; click to jump, hover to read."""

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__()
        self.viewer = viewer
        self.session = session_for(viewer)
        self.model: Timeline | None = None
        self.setMouseTracking(True)
        self.setMinimumHeight(TOP + 4 * ROW_HEIGHT + 8)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setObjectName("napari_trex_timeline")
        self.session.changed.connect(self.refresh)
        viewer.dims.events.current_step.connect(self._frame_changed)
        self.refresh()

    # -- geometry ------------------------------------------------------------------------------------
    def _frames(self) -> int:
        return max(1, self.model.n_frames if self.model else 1)

    def frame_at(self, x: float) -> int:
        width = max(1, self.width() - LABEL_WIDTH - 4)
        frame = (x - LABEL_WIDTH) / width * self._frames()
        return int(min(max(frame, 0), self._frames() - 1))

    def x_of(self, frame: float) -> float:
        width = max(1, self.width() - LABEL_WIDTH - 4)
        return LABEL_WIDTH + frame / self._frames() * width

    def row_at(self, y: float) -> int:
        return int((y - TOP) // ROW_HEIGHT)

    def position_of(self, frame: int, row: int = 0) -> QPointF:
        """Widget coordinates of ``frame`` in ``row`` (for tests and tooltips)."""
        return QPointF(self.x_of(frame + 0.5), TOP + (row + 0.5) * ROW_HEIGHT)

    # -- updates -------------------------------------------------------------------------------------
    def refresh(self, *_: Any) -> None:
        run = self.session.run
        self.model = None if run is None else timeline(run, self.session.identities,
                                                         self.session.trained_ranges)
        rows = len(self.model.row_labels) if self.model else 4
        self.setMinimumHeight(TOP + rows * ROW_HEIGHT + 8)
        self.update()

    def _frame_changed(self, *_: Any) -> None:
        self.update()

    # -- painting ------------------------------------------------------------------------------------
    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        painter.setPen(QColor(220, 220, 220))
        if self.model is None:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter,
                             "Track a video (the Track tab of the napari-trex dock) to see its "
                             "tracklets here")
            painter.end()
            return
        m = self.model
        rows = len(m.row_labels)
        bottom = TOP + rows * ROW_HEIGHT
        for start, end, kind in m.segments:  # bands behind the bars
            x0, x1 = self.x_of(start), self.x_of(end + 1)
            painter.fillRect(QRectF(x0, TOP, max(1.0, x1 - x0), bottom - TOP), SEGMENT_COLOURS[kind])
        for r, label in enumerate(m.row_labels):
            painter.setPen(QColor(220, 220, 220))
            painter.drawText(QRectF(4, TOP + r * ROW_HEIGHT, LABEL_WIDTH - 8, ROW_HEIGHT),
                             Qt.AlignmentFlag.AlignVCenter, label)
        for k in range(len(m.start)):
            c = m.colour[k]
            colour = QColor.fromRgbF(float(c[0]), float(c[1]), float(c[2]), float(c[3]))
            x0, x1 = self.x_of(m.start[k]), self.x_of(m.end[k] + 1)
            y = TOP + m.row[k] * ROW_HEIGHT + 3
            painter.fillRect(QRectF(x0, y, max(1.0, x1 - x0 - 0.5), ROW_HEIGHT - 6), colour)
        # frame axis and cursor
        painter.setPen(QColor(180, 180, 180))
        for frame in _ticks(m.n_frames):
            x = self.x_of(frame)
            painter.drawLine(QPointF(x, TOP - 4), QPointF(x, TOP))
            painter.drawText(QPointF(x + 2, TOP - 4), str(frame))
        current = int(self.viewer.dims.current_step[0])
        painter.setPen(QPen(QColor(255, 255, 255), 2))
        x = self.x_of(current + 0.5)
        painter.drawLine(QPointF(x, TOP), QPointF(x, bottom))
        painter.end()

    # -- interaction ---------------------------------------------------------------------------------
    def mousePressEvent(self, event: Any) -> None:  # noqa: N802
        if self.model is None or event.position().x() < LABEL_WIDTH:
            return
        self.viewer.dims.set_current_step(0, self.frame_at(event.position().x()))

    def mouseMoveEvent(self, event: Any) -> None:  # noqa: N802
        text = self.tooltip_at(event.position().x(), event.position().y())
        self.setToolTip(text)
        if text:
            QToolTip.showText(event.globalPosition().toPoint(), text, self)
        else:
            QToolTip.hideText()

    def tooltip_at(self, x: float, y: float) -> str:
        """What hovering at (x, y) says: the tracklet there and why it ended."""
        if self.model is None or x < LABEL_WIDTH:
            return ""
        width = max(1, self.width() - LABEL_WIDTH - 4)
        frame = (x - LABEL_WIDTH) / width * self._frames()
        bar = self.model.bar_at(self.row_at(y), frame)
        return "" if bar is None else self.model.describe(bar)


def _ticks(n_frames: int, target: int = 8) -> list[int]:
    """Round frame numbers for the axis (about ``target`` of them)."""
    import math

    if n_frames <= 1:
        return [0]
    raw = n_frames / target
    step = 10 ** math.floor(math.log10(raw))
    for f in (1, 2, 5, 10):
        if f * step >= raw:
            step *= f
            break
    return list(range(0, n_frames, int(step)))
