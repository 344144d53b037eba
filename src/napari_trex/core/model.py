"""The data model of one tracking run: what :mod:`pipeline` produces, :mod:`results` saves and
loads, :mod:`workflow` passes around. Plain data, no orchestration (so that the modules that
make, save and use runs do not import each other)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

from .detection import Detections
from .settings import Settings
from .tracking import TrackingResult
from .tracklets import GlobalSegments
from .video import VideoInfo


@dataclass
class AutoParameters:
    """What was estimated from the video when the user left it to napari-trex."""

    n_individuals: int | None = None
    blob_size_ranges: list[tuple[float, float]] | None = None  # cm²
    reference_area_px: float = 0.0  # median area of one animal
    merged_area_px: float = 0.0  # a blob at least this large holds several animals (0 = unknown)
    smallest_area_px: float = 0.0  # smaller blobs in range are more likely fragments (0 = unknown)
    sampled_frames: int = 0
    track_max_speed: float | None = None  # cm/s, measured in place of a default that did not fit
    threshold: int | None = None  # grey levels, raised from a default that let pairs pass for one
    #: setting -> why its default was replaced by the value measured (see Settings.measured_default)
    replaced_defaults: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    units: str = ""  # what the lengths rest on, when cm_per_pixel is not calibrated

    def describe(self, units: bool = True) -> list[str]:
        """What was estimated and warned, one line each; ``units``: with the note on what the
        lengths rest on (the napari panel shows its own, in its words)."""
        lines = [f"NOTE: {self.units}"] if self.units and units else []
        if self.n_individuals is not None:
            lines.append(f"estimated track_max_individuals = {self.n_individuals} "
                         f"(95th percentile of blob counts in {self.sampled_frames} frames)")
        if self.blob_size_ranges is not None:
            lo, hi = self.blob_size_ranges[0]
            why = self.replaced_defaults.get("blob_size_ranges")
            lines.append(f"estimated blob_size_ranges = [[{lo:.4g}, {hi:.4g}]] cm²"
                         + (f": {why}" if why else ""))
        if self.threshold is not None:
            lines.append(f"estimated threshold = {self.threshold}: "
                         f"{self.replaced_defaults.get('threshold', '')}")
        if self.track_max_speed is not None:
            lines.append(f"estimated track_max_speed = {self.track_max_speed:.3g} cm/s: "
                         f"{self.replaced_defaults.get('track_max_speed', '')}")
        if self.reference_area_px > 0:
            lines.append(f"one animal is typically {self.reference_area_px:.0f} px; a blob of "
                         f"{self.merged_area_px:.0f} px or more holds several animals")
        return lines + [f"WARNING: {w}" for w in self.warnings]


@dataclass
class TrackingRun:
    """Everything a tracking run produced; saved by :mod:`napari_trex.core.results`."""

    video_info: VideoInfo
    settings: Settings  # as used: automatic values filled in
    fps: float
    times: np.ndarray
    background: np.ndarray
    detections: Detections
    result: TrackingResult
    segments: GlobalSegments
    auto: AutoParameters = field(default_factory=AutoParameters)
    timings: dict[str, float] = field(default_factory=dict)
    # which tracking this is: identities saved beside it name it, so stale ones are never mixed in
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # the video it was made from (size, a hash of a few frames; see workflow.video_fingerprint)
    fingerprint: dict = field(default_factory=dict)

    @property
    def n_individuals(self) -> int:
        return self.result.assignment.shape[1]


__all__ = ["AutoParameters", "TrackingRun"]
