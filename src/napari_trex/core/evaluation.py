"""Scoring against ground truth: is every tracklet one animal, and how much is covered?

Used by tests and benchmarks (synthetic data and the reference tables in ../shared/data).
A detection belongs to the ground-truth animal closest to it (within ``max_distance`` px);
a tracklet is *mixed* when more than 1 % of its frames, or any run of 3 or more frames,
belong to another animal than its majority.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass
class TrackletScore:
    n_tracklets: int
    mixed: list[int]  # ids of mixed tracklets
    coverage: float  # share of ground-truth animal-frames inside some tracklet
    median_length: float


def truth_per_detection(x: np.ndarray, y: np.ndarray, frame: np.ndarray, truth: dict[str, np.ndarray],
                        max_distance: float) -> np.ndarray:
    """Ground-truth identity of each detection row (-1 when none is close enough)."""
    out = np.full(len(x), -1, np.int64)
    n_frames = int(max(frame.max(initial=-1), truth["frame"].max(initial=-1))) + 1
    t_order = np.argsort(truth["frame"], kind="stable")
    t_off = np.searchsorted(truth["frame"][t_order], np.arange(n_frames + 1))
    d_order = np.argsort(frame, kind="stable")
    d_off = np.searchsorted(frame[d_order], np.arange(n_frames + 1))
    for f in range(n_frames):
        rows = d_order[d_off[f]: d_off[f + 1]]
        truths = t_order[t_off[f]: t_off[f + 1]]
        if not len(rows) or not len(truths):
            continue
        d = np.hypot(x[rows, None] - truth["x"][truths][None], y[rows, None] - truth["y"][truths][None])
        r, c = linear_sum_assignment(d)
        ok = d[r, c] <= max_distance
        out[rows[r[ok]]] = truth["identity"][truths[c[ok]]]
    return out


def score_tracklets(assignment: np.ndarray, tracklet_of: np.ndarray, x: np.ndarray, y: np.ndarray,
                    frame: np.ndarray, truth: dict[str, np.ndarray], max_distance: float) -> TrackletScore:
    """Mixed tracklets and coverage of a tracking result against ground truth."""
    identity = truth_per_detection(x, y, frame, truth, max_distance)
    mixed, lengths = [], []
    covered = 0
    for tid in np.unique(tracklet_of[tracklet_of >= 0]):
        f, slot = np.nonzero(tracklet_of == tid)
        rows = assignment[f, slot]
        ids = identity[rows]
        lengths.append(len(ids))
        known = ids[ids >= 0]
        covered += len(known)
        if not len(known):
            continue
        majority = np.bincount(known).argmax()
        other = (ids >= 0) & (ids != majority)  # -1: no animal close (a fragment), not a switch
        longest, run = 0, 0
        for o in other:
            run = run + 1 if o else 0
            longest = max(longest, run)
        if other.mean() > 0.01 or longest >= 3:
            mixed.append(int(tid))
    total = len(truth["frame"])
    return TrackletScore(len(lengths), mixed, covered / max(total, 1),
                         float(np.median(lengths)) if lengths else 0.0)


def identity_accuracy(predicted: np.ndarray, reference: np.ndarray) -> tuple[float, dict[int, int]]:
    """Share of matching labels after mapping predicted labels to reference labels
    (Hungarian on the co-occurrence table). Entries < 0 in either are ignored."""
    ok = (predicted >= 0) & (reference >= 0)
    if not ok.any():
        return 0.0, {}
    p, r = predicted[ok], reference[ok]
    table = np.zeros((p.max() + 1, r.max() + 1), np.int64)
    np.add.at(table, (p, r), 1)
    rows, cols = linear_sum_assignment(-table)
    mapping = {int(a): int(b) for a, b in zip(rows, cols)}
    return float(table[rows, cols].sum() / ok.sum()), mapping
