"""The blob census of the Tracking panel's preview: how big the blobs of the sampled frames are
(a histogram on a log scale with ``blob_size_ranges`` drawn on it), and how many animal-sized
blobs each sampled frame has, against ``track_max_individuals`` (frames where an animal would
be lost are red). Painted with QPainter from plain numbers (see :meth:`BlobCensus.update_census`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

HISTOGRAM_BINS = 40


@dataclass
class Census:
    """Numbers behind the plot (no Qt): log-spaced histogram, the ranges, per-frame counts."""

    edges: np.ndarray = field(default_factory=lambda: np.empty(0))  # area bin edges (px)
    counts: np.ndarray = field(default_factory=lambda: np.empty(0))  # blobs per bin
    ranges: list[tuple[float, float]] = field(default_factory=list)  # blob_size_ranges (px)
    in_range: np.ndarray = field(default_factory=lambda: np.empty(0))  # per sampled frame
    frames: np.ndarray = field(default_factory=lambda: np.empty(0))  # which frames
    expected: int = 0  # track_max_individuals (0: unknown)

    @classmethod
    def of(cls, areas: list[np.ndarray], frames: np.ndarray, ranges: list[tuple[float, float]],
           expected: int) -> Census:
        pooled = np.concatenate(areas) if areas else np.empty(0)
        pooled = pooled[pooled >= 1]
        top = max(float(pooled.max()) if len(pooled) else 10.0,
                  *(hi for _, hi in ranges if np.isfinite(hi)), 10.0)
        edges = np.logspace(0, np.log10(top * 1.5), HISTOGRAM_BINS + 1)
        counts = np.histogram(pooled, edges)[0]
        inside = [int(sum(((a >= lo) & (a <= hi)).sum() for lo, hi in ranges)) for a in areas]
        return cls(edges, counts, list(ranges), np.asarray(inside), np.asarray(frames), expected)

    @property
    def short_frames(self) -> int:
        """Sampled frames with fewer animal-sized blobs than animals."""
        return int((self.in_range < self.expected).sum()) if self.expected else 0


class BlobCensus(QWidget):
    """Histogram of blob areas with the size ranges, and blobs in range per sampled frame."""

    def __init__(self) -> None:
        super().__init__()
        self.census = Census()
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Top: how many blobs of each area the sampled frames hold (log scale); "
                        "green: blob_size_ranges. Bottom: animal-sized blobs per sampled frame; "
                        "red where there are fewer than track_max_individuals.")

    def update_census(self, census: Census) -> None:
        self.census = census
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802, ANN001 - Qt's name
        c = self.census
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        width, height = self.width(), self.height()
        top_h = int(height * 0.62)
        painter.setPen(QColor(200, 200, 200))
        if not len(c.counts):
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no blobs sampled yet")
            return
        lo_log, hi_log = np.log10(c.edges[0]), np.log10(c.edges[-1])

        def x_of(area: float) -> float:
            return 4 + (np.log10(max(area, c.edges[0])) - lo_log) / (hi_log - lo_log) * (width - 8)

        for lo, hi in c.ranges:  # the size ranges behind the bars
            right = x_of(min(hi, c.edges[-1]))
            painter.fillRect(QRectF(x_of(lo), 2, max(1.0, right - x_of(lo)), top_h - 14),
                             QColor(60, 180, 60, 90))
        peak = max(1, int(c.counts.max()))
        for k, n in enumerate(c.counts):
            if n:
                h = (top_h - 16) * np.log1p(n) / np.log1p(peak)
                painter.fillRect(QRectF(x_of(c.edges[k]), top_h - 14 - h,
                                        max(1.0, x_of(c.edges[k + 1]) - x_of(c.edges[k]) - 1), h),
                                 QColor(170, 190, 220))
        painter.setPen(QColor(200, 200, 200))
        for area in (1, 10, 100, 1000, 10000, 100000):
            if c.edges[0] <= area <= c.edges[-1]:
                painter.drawText(QPointF(x_of(area) - 4, top_h - 2), f"{area:g}")
        # blobs in range per sampled frame
        strip_top, strip_h = top_h + 4, height - top_h - 8
        most = max(1, int(c.in_range.max()) if len(c.in_range) else 1, c.expected)
        if c.expected:
            y = strip_top + strip_h * (1 - c.expected / most)
            painter.setPen(QPen(QColor(230, 230, 230), 1, Qt.PenStyle.DashLine))
            painter.drawLine(QPointF(4, y), QPointF(width - 4, y))
        n = len(c.in_range)
        for k, count in enumerate(c.in_range):
            colour = QColor(230, 70, 60) if c.expected and count < c.expected else QColor(90, 200, 90)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(colour)
            x = 4 + (k + 0.5) / max(n, 1) * (width - 8)
            painter.drawEllipse(QPointF(x, strip_top + strip_h * (1 - count / most)), 2.5, 2.5)
