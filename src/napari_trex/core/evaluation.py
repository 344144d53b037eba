"""Scoring against ground truth: is every tracklet one animal, and how much is covered?

Used by tests and benchmarks (synthetic data and the reference tables in ../shared/data).
In each frame the tracked detections (those some slot holds) are matched one to one to the
ground-truth animals (Hungarian on distance, within ``max_distance`` px); untracked rows take no
part, so neither a merged blob that was replaced by its split parts nor a broken-off leg can
steal an animal from the detection that really follows it. A tracklet is *mixed* when more
than 1 % of its frames, or any run of 3 or more frames, belong to another animal than its
majority.
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


def _by_frame(frame: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by frame: frame f's rows are ``order[offsets[f]:offsets[f + 1]]``."""
    order = np.argsort(frame, kind="stable")
    return order, np.searchsorted(frame[order], np.arange(n_frames + 1))


def truth_per_detection(x: np.ndarray, y: np.ndarray, frame: np.ndarray, truth: dict[str, np.ndarray],
                        max_distance: float, rows: np.ndarray | None = None) -> np.ndarray:
    """Ground-truth identity of each detection row (-1 when none is close enough); only
    ``rows`` (indices) take part when given."""
    out = np.full(len(x), -1, np.int64)
    if rows is not None:
        x, y, frame = x[rows], y[rows], frame[rows]
        sub = truth_per_detection(x, y, frame, truth, max_distance)
        out[rows] = sub
        return out
    n_frames = int(max(frame.max(initial=-1), truth["frame"].max(initial=-1))) + 1
    t_order, t_off = _by_frame(truth["frame"], n_frames)
    d_order, d_off = _by_frame(frame, n_frames)
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
    tracked_rows = np.unique(assignment[assignment >= 0])
    identity = truth_per_detection(x, y, frame, truth, max_distance, tracked_rows)
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


@dataclass
class TrackletReport:
    """What a user of the tracklets cares about, against ground truth (benchmarks, tests)."""

    n_tracklets: int
    mixed: list[int]  # ids of tracklets that hold two animals
    coverage: float  # share of ground-truth animal-frames inside some tracklet
    n50: int  # half of the tracked animal-frames lie in tracklets at least this long
    one_frame: int  # tracklets of a single frame
    one_frame_without_contact: int  # ... of them where the animal touches nobody (±1 frame) and
    #                                   its blob holds no other animal (the detector saw no merge)
    one_frame_after_contact: int  # ... of those, within half a second after a contact
    all_tracked: float  # share of frames in which every animal is inside a tracklet
    longest_global_segment: int
    end_reasons: dict[str, int]  # how many tracklets ended for each reason

    def lines(self) -> list[str]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.end_reasons.items(), key=lambda kv: -kv[1]))
        return [f"{self.n_tracklets} tracklets, N50 {self.n50} frames, {len(self.mixed)} mixed, "
                f"coverage {self.coverage:.2%}, all animals in tracklets in {self.all_tracked:.1%} "
                f"of frames, longest global segment {self.longest_global_segment} frames",
                f"one-frame tracklets: {self.one_frame} ({self.one_frame_without_contact} where the "
                f"animal touches nobody and its blob holds no other animal, in that frame or the "
                f"frames beside it; "
                f"{self.one_frame_after_contact} of these within 0.5 s after a contact, as the "
                "animals part)", f"ends: {reasons}"]


def n50(lengths: np.ndarray) -> int:
    """Half of all frames lie in tracklets at least this long."""
    lengths = np.sort(np.asarray(lengths))[::-1]
    if not len(lengths):
        return 0
    return int(lengths[np.searchsorted(np.cumsum(lengths), lengths.sum() / 2)])


def tracklet_report(run, truth: dict[str, np.ndarray], max_distance: float) -> TrackletReport:
    """Score a :class:`~napari_trex.core.pipeline.TrackingRun` against ground truth.

    ``truth`` may carry ``contact`` (1 where the animal touches another, from the generator);
    a one-frame tracklet counts as *without contact* when, in that frame and the frames beside
    it, its animal touches nobody and its detected blob holds no other animal. Both are real
    events that may end a tracklet: silhouettes more than a pixel apart still merge into one
    blob where blur, compression and noise bridge the gap at the threshold.
    """
    from .tracklets import reason_names

    result = run.result
    det = result.detections
    score = score_tracklets(result.assignment, result.tracklet_of, det["x"], det["y"], det["frame"],
                            truth, max_distance)
    t = result.tracklets
    n_frames = result.assignment.shape[0]
    identity = truth_per_detection(det["x"], det["y"], det["frame"], truth, max_distance,
                                   np.unique(result.assignment[result.assignment >= 0]))
    contact = np.zeros((n_frames + 2, int(truth["identity"].max(initial=-1)) + 1), bool)
    if "contact" in truth:
        c = truth["contact"].astype(bool)
        contact[truth["frame"][c] + 1, truth["identity"][c]] = True
    contact[1:-1] |= merged_in_detection(run.detections, truth, n_frames, contact.shape[1])
    near_contact = contact[:-2] | contact[1:-1] | contact[2:]
    half_second = max(1, int(round(0.5 * run.fps)))
    one = np.flatnonzero(t.length == 1)
    without = after = 0
    for k in one:
        f, slot = int(t.start[k]), int(t.individual[k])
        row = result.assignment[f, slot]
        animal = identity[row] if row >= 0 else -1
        if animal >= 0 and not near_contact[f, animal]:
            without += 1
            after += bool(contact[max(0, f + 1 - half_second): f + 1, animal].any())
    reasons: dict[str, int] = {}
    for code in t.end_reason:
        for name in reason_names(int(code)).split("|"):
            reasons[name] = reasons.get(name, 0) + 1
    tracked = result.tracklet_of >= 0
    seg = run.segments
    return TrackletReport(len(t), score.mixed, score.coverage, n50(t.length), len(one), without, after,
                          float(tracked.all(axis=1).mean()) if n_frames else 0.0,
                          int((seg.end - seg.start + 1).max()) if len(seg) else 0, reasons)


def merged_in_detection(detections, truth: dict[str, np.ndarray], n_frames: int, n_animals: int
                        ) -> np.ndarray:
    """(frames, animals): the animal's ground-truth centre lies in a detected blob (as the
    detector found it, before any split) together with another animal's centre: the blob's
    pixels where they were kept (blobs that may hold several animals), else its bounding box."""
    out = np.zeros((n_frames, n_animals), bool)
    ids, gx, gy = truth["identity"].astype(np.int64), truth["x"], truth["y"]
    order, offsets = _by_frame(truth["frame"], n_frames)
    for f in range(min(n_frames, detections.n_frames)):
        here = order[offsets[f]: offsets[f + 1]]
        if len(here) < 2:
            continue
        rows = detections.rows(f)
        x0, x1 = detections["x0"][rows], detections["x1"][rows]
        y0, y1 = detections["y0"][rows], detections["y1"][rows]
        px, py = np.floor(gx[here]).astype(np.int64), np.floor(gy[here]).astype(np.int64)
        inside = (px[:, None] >= x0) & (px[:, None] < x1) & (py[:, None] >= y0) & (py[:, None] < y1)
        for j in np.flatnonzero(inside.sum(axis=0) >= 2):
            animals = np.flatnonzero(inside[:, j])
            kept = detections.pixels.get(rows.start + int(j))
            if kept is not None:
                top, left, crop = kept
                animals = animals[crop[py[animals] - top, px[animals] - left] > 0]
            if len(animals) >= 2:
                out[f, ids[here[animals]]] = True
    return out


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


@dataclass
class IdentityScore:
    right: int  # ground-truth animal-frames where the animal's identity sits on it
    wrong: int  # ... where that identity is elsewhere (a swap) or on another animal
    missing: int  # ... where that identity is nowhere in the frame
    total: int
    mapping: dict[int, int]  # predicted identity -> ground-truth identity

    @property
    def share_right(self) -> float:
        """Right over all ground-truth animal-frames: a missing identity counts as wrong."""
        return self.right / self.total if self.total else 0.0


def identity_score(frame: np.ndarray, identity: np.ndarray, x: np.ndarray, y: np.ndarray,
                   truth: dict[str, np.ndarray], max_distance: float) -> IdentityScore:
    """For every ground-truth animal-frame: is the identity it maps to within ``max_distance``?

    Predicted identities are mapped to ground-truth ones once (Hungarian on how often they are
    matched to each other, frame by frame). Judging by identity, not by a per-frame position
    match, keeps two animals that lie on top of each other from being scored as a coin toss:
    what counts is whether the identity the user reads is on its animal.
    """
    ref = truth_per_detection(x, y, frame, truth, max_distance)
    _, mapping = identity_accuracy(identity, ref)
    inverse = {g: p for p, g in mapping.items()}
    has = identity >= 0
    position = {(int(f), int(i)): (float(a), float(b))
                for f, i, a, b in zip(frame[has], identity[has], x[has], y[has])}
    right = wrong = missing = 0
    for f, g, gx, gy in zip(truth["frame"], truth["identity"], truth["x"], truth["y"]):
        p = inverse.get(int(g))
        where = position.get((int(f), p)) if p is not None else None
        if where is None:
            missing += 1
        elif np.hypot(where[0] - gx, where[1] - gy) <= max_distance:
            right += 1
        else:
            wrong += 1
    return IdentityScore(right, wrong, missing, len(truth["frame"]), mapping)
