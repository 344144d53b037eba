"""What the timeline and dataset panels show, computed without Qt (tested headless).

The panels only paint these tables: one row per individual with its tracklets as bars
(:func:`timeline`), and per individual the averaged network prediction inside a global
segment (:func:`dataset_rows`), TRex's "display > dataset".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.tracklets import REASON_HELP, reason_names
from .layers import identity_rgba


@dataclass
class Timeline:
    """Bars (one per tracklet) and global segments, in frames."""

    n_frames: int
    row_labels: list[str]
    row: np.ndarray  # per bar
    start: np.ndarray
    end: np.ndarray  # inclusive
    tracklet: np.ndarray
    end_reason: list[str]
    colour: np.ndarray  # (bars, 4) RGBA
    segments: list[tuple[int, int, str]] = field(default_factory=list)  # start, end, kind

    def bar_at(self, row: int, frame: float) -> int | None:
        """Index of the bar drawn in ``row`` at ``frame`` (for hover and click)."""
        hit = np.flatnonzero((self.row == row) & (self.start <= frame) & (self.end + 1 > frame))
        return int(hit[0]) if len(hit) else None

    def describe(self, bar: int) -> str:
        reason = self.end_reason[bar]
        why = "; ".join(REASON_HELP.get(r, r) for r in reason.split("|"))
        return (f"tracklet {self.tracklet[bar]}: frames {self.start[bar]}–{self.end[bar]} "
                f"({self.end[bar] - self.start[bar] + 1} frames)\nended: {reason} ({why})")


def timeline(run: Any, identities: Any = None, trained: list[tuple[int, int]] | None = None) -> Timeline:
    """One row per individual: by identity after identification (plus a last row
    "unidentified" when some tracklets have none), by tracking slot before it.

    Global segments are ``best`` (the best quality one, where training starts), ``trained``
    (used by the identification, ``trained`` ranges) or ``other``.
    """
    t = run.result.tracklets
    n = run.n_individuals
    if identities is None:
        row = t.individual.astype(int)
        labels = [f"slot {k}" for k in range(n)]
        colour = identity_rgba(row, n)
        colour[:, 3] = 0.55  # not identified yet: paler
    else:
        ident = identities.identity[t.id].astype(int)
        row = np.where(ident >= 0, ident, n)
        labels = [f"id {k}" for k in range(n)]
        if (ident < 0).any():
            labels.append("unidentified")
        colour = identity_rgba(ident, n)
    trained_set = {tuple(map(int, r)) for r in (trained or [])}
    segments = []
    best = run.segments.best()
    for a, b in zip(run.segments.start, run.segments.end):
        rng = (int(a), int(b))
        kind = "best" if rng == best else "trained" if rng in trained_set else "other"
        segments.append((rng[0], rng[1], kind))
    return Timeline(len(run.result.assignment), labels, row, t.start.astype(int), t.end.astype(int),
                    t.id.astype(int), [reason_names(int(c)) for c in t.end_reason], colour, segments)


def segment_at(run: Any, frame: int) -> tuple[int, int] | None:
    """The global segment that contains ``frame``, if any."""
    s = run.segments
    inside = np.flatnonzero((s.start <= frame) & (s.end >= frame))
    return (int(s.start[inside[0]]), int(s.end[inside[0]])) if len(inside) else None


def dataset_rows(run: Any, identities: Any, segment: tuple[int, int]) -> list[dict[str, Any]]:
    """Per tracking slot inside a global segment: its tracklet, the identity given, the
    averaged prediction (argmax id and its probability, images averaged) and the tracklet's
    length. Without identification, the prediction columns are empty."""
    start, end = segment
    rows = []
    for slot, tid in enumerate(run.result.tracklet_of[start]):
        tid = int(tid)
        row: dict[str, Any] = {"individual": slot, "tracklet": tid, "identity": "", "source": "",
                               "predicted": "", "probability": float("nan"), "samples": 0,
                               "frames": 0, "travelled_cm": float("nan")}
        if tid >= 0:
            t = run.result.tracklets
            row["frames"] = int(t.end[tid] - t.start[tid] + 1)
            row["travelled_cm"] = _travelled_cm(run, tid)
            if identities is not None:
                vector = identities.mean_vectors[tid]
                row["identity"] = int(identities.identity[tid])
                row["source"] = str(identities.source[tid])
                row["samples"] = int(identities.n_samples[tid])
                if np.isfinite(vector).all():
                    row["predicted"] = int(np.argmax(vector))
                    row["probability"] = float(np.max(vector))
        rows.append(row)
    return rows


def _travelled_cm(run: Any, tracklet: int) -> float:
    """Path length of one tracklet in cm (TRex's "cm travelled" in the dataset view)."""
    r = run.result
    t = r.tracklets
    slot = int(t.individual[tracklet])
    frames = np.arange(t.start[tracklet], t.end[tracklet] + 1)
    rows = r.assignment[frames, slot]
    rows = rows[(rows >= 0) & (r.tracklet_of[frames, slot] == tracklet)]
    x, y = r.detections["x"][rows], r.detections["y"][rows]
    return float(np.hypot(np.diff(x), np.diff(y)).sum() * run.settings.pixel_size_cm(run.video_info.width))


def segment_quality(run: Any, segment: tuple[int, int]) -> dict[str, Any]:
    """TRex's quality figures of one global segment (rank 0 = best)."""
    s = run.segments
    k = int(np.flatnonzero((s.start == segment[0]) & (s.end == segment[1]))[0])
    return {"frames": int(s.end[k] - s.start[k] + 1), "rank": int(s.rank[k]),
            "min_cells": float(s.min_cells[k]), "average_samples": float(s.average_samples[k])}
