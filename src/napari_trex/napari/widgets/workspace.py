"""Plugins > napari-trex > napari-trex: every panel in one dock with tabs, the Timeline along
the bottom.

Stacked one under the other, the panels asked for over 2000 px of height: the canvas shrank to
a strip. Here each panel is a tab (Track · Identify · Correct · Dataset) inside a scroll area,
so no panel makes the window taller than a laptop screen (checked at 1366×768), and the
Timeline docks along the bottom, as wide as the video. The Plugins menu still opens each panel
on its own for users who prefer that, in a scroll area of its own (:class:`ScrollingPanel`).
"""

# no `from __future__ import annotations`: napari injects the viewer by the annotation

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFrame, QScrollArea, QTabWidget, QVBoxLayout, QWidget

if TYPE_CHECKING:  # pragma: no cover
    import napari

TIMELINE_DOCK = "Timeline (napari-trex)"
DOCK_WIDTH = 430  # px: the canvas keeps most of a 1366 px wide screen
PANEL_MIN_HEIGHT = 240  # px: a panel opened on its own shows at least this much of itself


class ScrollingPanel(QScrollArea):
    """A panel in a vertical scroll area: each tab of the workspace, and each panel opened on
    its own from the Plugins menu.

    napari docks a panel as it is: two tall ones (Tracking, Visual identification) stacked in
    a 1000 px high window were given less than they need, and Qt squeezed their parameter
    forms into rows a few pixels high, unreadable (the description's wrapped text asks for
    more height than its minimum says). In a scroll area each panel keeps its rows and scrolls
    instead. The panel's own attributes (``form``, ``track_button``, ...) are reached through
    this wrapper, so a script that opens a panel by name drives it as before; ``native`` is
    the scroll area, which is what napari docks.
    """

    def __init__(self, panel: Any) -> None:
        super().__init__()
        self.panel = panel
        inner = getattr(panel, "native", panel)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidget(inner)
        self.setMinimumWidth(min(inner.minimumSizeHint().width() + 20, DOCK_WIDTH))
        # never a strip: a panel docked below another keeps a few rows in view
        self.setMinimumHeight(min(inner.minimumSizeHint().height(), PANEL_MIN_HEIGHT))

    @property
    def native(self) -> QScrollArea:
        return self

    def sizeHint(self) -> Any:  # noqa: N802 - Qt's name
        # the panel's own height: napari shares a dock column by the docks' hints (a scroll
        # area's default hint gave one panel the whole column and the other a strip)
        hint = super().sizeHint()
        hint.setHeight(self.widget().sizeHint().height())
        return hint

    def _panel_has(self, name: str) -> bool:
        # only what this QScrollArea lacks, and never Qt's or napari's private names
        panel = self.__dict__.get("panel")
        return panel is not None and not name.startswith("_") and not hasattr(type(self), name) \
            and hasattr(panel, name)

    def __getattr__(self, name: str) -> Any:
        if not self._panel_has(name):
            raise AttributeError(name)
        return getattr(self.__dict__["panel"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        if self._panel_has(name):  # e.g. a script that replaces the panel's confirm()
            setattr(self.__dict__["panel"], name, value)
        else:
            super().__setattr__(name, value)


class TrackingPanel(ScrollingPanel):
    """Plugins > napari-trex > Tracking, on its own."""

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        from .tracking import TrackingWidget
        super().__init__(TrackingWidget(viewer))


class IdentificationPanel(ScrollingPanel):
    """Plugins > napari-trex > Visual identification, on its own."""

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        from .identification import IdentificationWidget
        super().__init__(IdentificationWidget(viewer))


class CorrectionsPanel(ScrollingPanel):
    """Plugins > napari-trex > Corrections, on its own."""

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        from .corrections import CorrectionsWidget
        super().__init__(CorrectionsWidget(viewer))


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
            self.tabs.addTab(ScrollingPanel(panel), title)
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
