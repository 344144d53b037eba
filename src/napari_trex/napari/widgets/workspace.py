"""Plugins > napari-trex > napari-trex: every panel in one dock with tabs, the Timeline along
the bottom.

Stacked one under the other, the panels asked for over 2000 px of height: the canvas shrank to
a strip. Here each panel is a tab (Track · Identify · Correct · Dataset) inside a scroll area,
so no panel makes the window taller than a laptop screen (checked at 1366×768), and the
Timeline docks along the bottom, as wide as the video. The Plugins menu still opens each panel
on its own for users who prefer that.
"""

# no `from __future__ import annotations`: napari injects the viewer by the annotation

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFrame, QScrollArea, QTabWidget, QVBoxLayout, QWidget

if TYPE_CHECKING:  # pragma: no cover
    import napari

TIMELINE_DOCK = "Timeline (napari-trex)"
DOCK_WIDTH = 430  # px: the canvas keeps most of a 1366 px wide screen


def scrolling(widget: QWidget) -> QScrollArea:
    """``widget`` in a vertical scroll area: its height no longer sets the window's minimum."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(widget)
    area.setMinimumWidth(min(widget.minimumSizeHint().width() + 20, DOCK_WIDTH))
    return area


class Workspace(QWidget):
    """The napari-trex panels as tabs; adds the Timeline at the bottom of the window."""

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        from .corrections import CorrectionsWidget
        from .dataset import DatasetWidget
        from .identification import IdentificationWidget
        from .tracking import TrackingWidget

        super().__init__()
        self.viewer = viewer
        self.setObjectName("napari_trex_workspace")
        self.tabs = QTabWidget()
        self.panels: dict[str, Any] = {}
        for title, make in (("Track", TrackingWidget), ("Identify", IdentificationWidget),
                            ("Correct", CorrectionsWidget), ("Dataset", DatasetWidget)):
            panel = make(viewer)
            self.panels[title] = panel
            self.tabs.addTab(scrolling(getattr(panel, "native", panel)), title)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.timeline = self._dock_timeline()
        QTimer.singleShot(0, self._fit)  # once docked: the canvas changed size

    def sizeHint(self) -> Any:  # noqa: N802 - Qt's name
        hint = super().sizeHint()
        hint.setWidth(DOCK_WIDTH)
        return hint

    def show_tab(self, title: str) -> Any:
        """Bring a tab to the front (``Track``, ``Identify``, ``Correct`` or ``Dataset``)."""
        self.tabs.setCurrentIndex(list(self.panels).index(title))
        return self.panels[title]

    def _dock_timeline(self) -> Any:
        from .timeline import TimelineWidget

        window = getattr(self.viewer, "window", None)
        if window is None:
            return None
        docks = getattr(window, "dock_widgets", {})
        if TIMELINE_DOCK in docks:
            return docks[TIMELINE_DOCK]
        timeline = TimelineWidget(self.viewer)
        window.add_dock_widget(timeline, name=TIMELINE_DOCK, area="bottom")
        return timeline

    def _fit(self) -> None:
        """Show the whole frame in the canvas that is left."""
        if len(self.viewer.layers):
            self.viewer.reset_view()
