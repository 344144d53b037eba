"""Plugins > napari-trex > Dataset: what the network thinks inside a global segment.

TRex's "display > dataset": for the global segment under the current frame and for the
best-quality one (where training starts), per individual its tracklet, the identity it was
given and how, and the averaged prediction (argmax id, its probability, images averaged).
A low probability or two individuals with the same predicted id is where to look first.
"""

# no `from __future__ import annotations`: napari injects the viewer by the annotation

import math
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (QLabel, QSizePolicy, QTableWidget, QTableWidgetItem, QVBoxLayout,
                            QWidget)

from ..models import dataset_rows, segment_at, segment_quality
from ..session import session_for

if TYPE_CHECKING:  # pragma: no cover
    import napari

COLUMNS = ["individual", "tracklet", "identity", "source", "predicted", "probability", "samples",
           "frames", "travelled_cm"]


class DatasetWidget(QWidget):
    """Two tables: the global segment at the current frame, and the best one."""

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__()
        self.viewer = viewer
        self.session = session_for(viewer)
        layout = QVBoxLayout(self)
        self.current_title, self.current = QLabel(), _table()
        self.best_title, self.best = QLabel(), _table()
        for title in (self.current_title, self.best_title):  # wrap, never widen the dock
            title.setWordWrap(True)
            title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        for w in (self.current_title, self.current, self.best_title, self.best):
            layout.addWidget(w)
        self.session.changed.connect(self.refresh)
        viewer.dims.events.current_step.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        run = self.session.run
        if run is None:
            self.current_title.setText("Track a video to see its global segments")
            self.best_title.setText("")
            _fill(self.current, [])
            _fill(self.best, [])
            return
        frame = int(self.viewer.dims.current_step[0])
        here = segment_at(run, frame)
        best = run.segments.best()
        self.current_title.setText(_title(run, here, f"frame {frame}: no global segment here"
                                          " (not every animal is inside a tracklet)", "here"))
        _fill(self.current, [] if here is None else dataset_rows(run, self.session.identities, here))
        self.best_title.setText(_title(run, best, "no global segment in this video", "best quality"))
        _fill(self.best, [] if best is None else dataset_rows(run, self.session.identities, best))


def _title(run: Any, segment: tuple[int, int] | None, empty: str, what: str) -> str:
    if segment is None:
        return empty
    q = segment_quality(run, segment)
    return (f"Global segment {what}: frames {segment[0]}–{segment[1]} ({q['frames']} frames), "
            f"quality rank {q['rank']}, min. cells {q['min_cells']:.0f}, "
            f"avg. samples {q['average_samples']:.0f}")


def _table() -> QTableWidget:
    table = QTableWidget(0, len(COLUMNS))
    table.setHorizontalHeaderLabels(COLUMNS)
    table.verticalHeader().setVisible(False)
    from qtpy.QtWidgets import QHeaderView

    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    return table


def _fill(table: QTableWidget, rows: list[dict[str, Any]]) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, name in enumerate(COLUMNS):
            value = row[name]
            if isinstance(value, float):
                text = "" if math.isnan(value) else f"{value:.3f}"
            else:
                text = str(value)
            table.setItem(r, c, QTableWidgetItem(text))
    table.resizeColumnsToContents()
    # tall enough for every individual without scrolling (up to 12 rows)
    height = table.horizontalHeader().height() + 4
    height += sum(table.rowHeight(r) for r in range(min(len(rows), 12)))
    table.setMinimumHeight(height)
