"""Tracklets (TRex's "consecutive segments") and global segments, as columnar data.

A *tracklet* is a run of frames in which one tracking slot followed one blob per frame with
nothing risky in between; it ends for a reason (TRex's bitmask, kept per tracklet so the
user can see why). The invariant everything downstream relies on: **a tracklet never
contains two different animals**. Visual identification labels whole tracklets, so one
hidden identity switch poisons its training data.

A *global segment* is a range of frames in which all N animals are each inside one single
tracklet for the whole range (the strict definition of the TRex paper, not the looser check
of its code; see trex-reference §3, §10). Global segments are ranked by quality
(``min_cells``: the fewest grid cells any animal visits, then ``average_samples``: mean
usable frames per animal); the best one is where identification starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# TRex v1 reasons (Individual::update_add_segment); MERGED and AMBIGUOUS are napari-trex's own:
# they end tracklets where TRex would keep going through a possible identity switch.
# IDENTITY_CHANGED marks TRex's split of a long tracklet where the predicted identity changes.
LOST_FOR_ONE_FRAME = 1
TIMESTAMP_TOO_DIFFERENT = 2
PROBABILITY_TOO_SMALL = 4
MANUAL_MATCH = 8
WEIRD_DISTANCE = 16
NO_BLOB = 32
MAX_SEGMENT_LENGTH = 64
MERGED = 128
AMBIGUOUS = 256
IDENTITY_CHANGED = 512
MANUAL_SPLIT = 1024  # the user split the tracklet here (manual_splits)

REASON_NAMES = {
    LOST_FOR_ONE_FRAME: "FramesSkipped",
    TIMESTAMP_TOO_DIFFERENT: "TimestampTooDifferent",
    PROBABILITY_TOO_SMALL: "ProbabilityTooSmall",
    MANUAL_MATCH: "ManualMatch",
    WEIRD_DISTANCE: "WeirdDistance",
    NO_BLOB: "NoBlob",
    MAX_SEGMENT_LENGTH: "MaxSegmentLength",
    MERGED: "MergedWithAnother",
    AMBIGUOUS: "AmbiguousMatch",
    IDENTITY_CHANGED: "IdentityChanged",
    MANUAL_SPLIT: "ManualSplit",
}
REASON_HELP = {
    "FramesSkipped": "the animal was missing in the next frame",
    "TimestampTooDifferent": "the time to the next frame was too long (huge_timestamp_seconds)",
    "ProbabilityTooSmall": "the next match was not trusted (track_trusted_probability)",
    "ManualMatch": "a manual match starts a new tracklet",
    "WeirdDistance": "the animal moved at >= 99% of track_max_speed",
    "NoBlob": "no blob was found for the animal",
    "MaxSegmentLength": "the tracklet reached track_segment_max_length",
    "MergedWithAnother": "it merged with another animal into one blob that could not be split",
    "AmbiguousMatch": "another blob or animal was almost as likely a match (a near-crossing)",
    "IdentityChanged": "identification saw another animal from here on (a missed switch)",
    "ManualSplit": "you split the tracklet here",
    "EndOfVideo": "the video ended",
}
MIN_GLOBAL_SEGMENT_FRAMES = 5
GRID_CELLS = 100


def reason_names(code: int) -> str:
    """``"FramesSkipped|NoBlob"`` for a bitmask; ``"EndOfVideo"`` for 0."""
    if code == 0:
        return "EndOfVideo"
    return "|".join(name for bit, name in REASON_NAMES.items() if code & bit)


def reason_code(names: str) -> int:
    """Inverse of :func:`reason_names`."""
    lookup = {v: k for k, v in REASON_NAMES.items()}
    return sum(lookup[n] for n in names.split("|") if n in lookup)


@dataclass
class Tracklets:
    """One row per tracklet: ``start`` and ``end`` inclusive, ``individual`` = tracking slot."""

    id: np.ndarray
    individual: np.ndarray
    start: np.ndarray
    end: np.ndarray
    end_reason: np.ndarray

    def __len__(self) -> int:
        return len(self.id)

    @property
    def length(self) -> np.ndarray:
        return self.end - self.start + 1

    @classmethod
    def from_rows(cls, rows: list[tuple[int, int, int, int, int]]) -> Tracklets:
        arr = np.array(rows, dtype=np.int64).reshape(-1, 5)
        return cls(*(arr[:, k] for k in range(5)))


@dataclass
class GlobalSegments:
    """Ranked global segments: ``rank`` 0 is the best quality (where training starts)."""

    start: np.ndarray
    end: np.ndarray
    min_cells: np.ndarray
    average_samples: np.ndarray
    rank: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    def best(self) -> tuple[int, int] | None:
        if not len(self):
            return None
        k = int(np.argmin(self.rank))
        return int(self.start[k]), int(self.end[k])


def segment_coverage(segments: GlobalSegments, tracklet_of: np.ndarray, tracklets: Tracklets) -> float:
    """Share of all animal-frames (frames x N) that lie in a tracklet of some global segment:
    everything the accumulation from global segments can ever train on. In a group that is
    rarely all apart (a few short global segments) it is small, and what the network learns
    there names little else."""
    n_frames, n = tracklet_of.shape
    if not len(segments) or not n_frames or not n:
        return 0.0
    inside = np.unique(tracklet_of[segments.start])
    inside = inside[inside >= 0]
    return float((tracklets.end[inside] - tracklets.start[inside] + 1).sum() / (n_frames * n))


def tracklet_matrix(assignment: np.ndarray, tracklets: Tracklets) -> np.ndarray:
    """``(frames, N)`` tracklet id of each slot per frame, -1 where the slot has none."""
    out = np.full(assignment.shape, -1, dtype=np.int64)
    for tid, ind, a, b in zip(tracklets.id, tracklets.individual, tracklets.start, tracklets.end):
        out[a: b + 1, ind] = tid
    return out


def global_segments(assignment: np.ndarray, tracklets: Tracklets, x: np.ndarray, y: np.ndarray,
                    split: np.ndarray, frame_size: tuple[int, int]) -> GlobalSegments:
    """Global segments (strict: each animal in one tracklet throughout) with TRex's quality.

    ``x, y, split`` are per detection row; ``assignment`` maps (frame, slot) to a row or -1.
    """
    n_frames, n = assignment.shape
    ids = tracklet_matrix(assignment, tracklets)
    good = (ids >= 0).all(axis=1) & (assignment >= 0).all(axis=1)
    change = np.ones(n_frames, bool)
    change[1:] = (ids[1:] != ids[:-1]).any(axis=1)
    starts, ends = [], []
    t = 0
    while t < n_frames:
        if not good[t]:
            t += 1
            continue
        a = t
        t += 1
        while t < n_frames and good[t] and not change[t]:
            t += 1
        if t - a >= MIN_GLOBAL_SEGMENT_FRAMES:
            starts.append(a)
            ends.append(t - 1)
    # quality per tracklet: cells of a 100x100 grid visited, usable (non-split) frames
    height, width = frame_size
    cells, samples = {}, {}
    for tid, ind, a, b in zip(tracklets.id, tracklets.individual, tracklets.start, tracklets.end):
        rows = assignment[a: b + 1, ind]
        rows = rows[rows >= 0]
        cx = np.clip((x[rows] / width * GRID_CELLS).astype(int), 0, GRID_CELLS - 1)
        cy = np.clip((y[rows] / height * GRID_CELLS).astype(int), 0, GRID_CELLS - 1)
        cells[int(tid)] = len(np.unique(cy * GRID_CELLS + cx))
        samples[int(tid)] = int((~split[rows]).sum())
    min_cells, average = [], []
    for a in starts:
        tids = ids[a]
        min_cells.append(min(cells[int(t)] for t in tids))
        average.append(float(np.mean([samples[int(t)] for t in tids])))
    start_arr = np.array(starts, dtype=np.int64)
    end_arr = np.array(ends, dtype=np.int64)
    min_cells_arr = np.array(min_cells, dtype=np.int64)
    average_arr = np.array(average, dtype=float)
    # rank: descending (min_cells, average_samples), ties by earlier start
    order = np.lexsort((start_arr, -average_arr, -min_cells_arr))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return GlobalSegments(start_arr, end_arr, min_cells_arr, average_arr, rank)
