"""Tracking: link blobs frame to frame into N tracking slots and cut the result into tracklets.

This follows TRex v1.1.9 (trex-reference §1.2, §2):

* each slot predicts where its animal will be (recent velocity, capped at
  ``track_max_speed``, decaying with ``track_speed_decay`` while the animal is lost);
* the probability of an edge slot → blob is P = S·A'·T' (speed, angle and time terms);
  edges below ``matching_probability_threshold`` are never used;
* slots and blobs that compete are grouped into clusters (connected components of the edge
  graph) and each cluster is solved by ``scipy.optimize.linear_sum_assignment``; the whole
  probability matrix is computed at once with numpy (no Python loop over pairs);
* when several slots want the same blob, the blob is split by raising the threshold until
  that many parts appear; if it cannot be split, none of them gets it (their tracklets end:
  a merged blob is exactly where identities get swapped);
* slots lost for at least ``track_max_reassign_time`` are re-attached greedily to leftover
  blobs, nearest first; each re-attachment starts a new tracklet;
* a tracklet ends on every TRex reason (frames skipped, timestamp gap, improbable match,
  manual match, speeding, no blob, maximum length) and the reason is kept;
* beyond TRex, a tracklet also ends where its match was *ambiguous*: another blob was
  almost as likely for this slot, or another slot almost as likely for this blob (a
  near-crossing, or two animals in one blob that only one slot claimed). TRex keeps going
  there and sometimes swaps identities inside a tracklet, which poisons identification.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .detection import COLUMNS, Detections, split_blob, split_blob_fill
from .errors import Cancelled
from .settings import Settings
from .tracklets import (
    LOST_FOR_ONE_FRAME,
    MANUAL_MATCH,
    MANUAL_SPLIT,
    MAX_SEGMENT_LENGTH,
    AMBIGUOUS,
    MERGED,
    NO_BLOB,
    PROBABILITY_TOO_SMALL,
    TIMESTAMP_TOO_DIFFERENT,
    WEIRD_DISTANCE,
    Tracklets,
)

HISTORY = 6  # positions kept per slot for the velocity (TRex: ~5 valid frames)


@dataclass(frozen=True)
class TrackingParams:
    """Tracking settings resolved for one video (pixels and seconds)."""

    n_individuals: int
    fps: float
    max_speed_px: float  # px/s
    speed_decay: float = 0.7
    max_reassign_time: float = 0.5
    trusted_probability: float = 0.5
    time_probability: bool = True
    matching_threshold: float = 0.1
    huge_timestamp_ends: bool = True
    huge_timestamp_seconds: float = 0.2
    end_for_speed: bool = True
    segment_max_length: float = 0.0
    size_ranges_px: tuple[tuple[float, float], ...] = ((0.0, np.inf),)
    split: bool = True
    split_fill: bool = True  # where raising the threshold fails, watershed from the predictions
    split_threshold: int = 15
    split_global_shrink: float = 0.2
    reference_area: float = 0.0  # typical area of one animal (px); 0 = unknown
    largest_area: float = 0.0  # area of the biggest animals (px, 90th percentile); 0 = unknown
    ambiguity_ratio: float = 0.5  # end a tracklet if a rival edge has >= this share of its P
    merge_area_factor: float = 1.2  # a blob this much larger than the animal was is a merge
    unknown_merge_factor: float = 1.5  # ... for slots with no size history: vs. largest_area
    manual_matches: dict[int, dict[int, int]] = field(default_factory=dict)
    manual_splits: dict[int, list[int]] = field(default_factory=dict)  # frame: blobs starting anew

    @classmethod
    def from_settings(cls, settings: Settings, fps: float, width: int, n_individuals: int,
                      size_ranges_px: tuple[tuple[float, float], ...], reference_area: float = 0.0,
                      largest_area: float = 0.0) -> TrackingParams:
        return cls(
            n_individuals=n_individuals, fps=fps,
            max_speed_px=settings.track_max_speed / settings.pixel_size_cm(width),
            speed_decay=settings.track_speed_decay,
            max_reassign_time=settings.track_max_reassign_time,
            trusted_probability=settings.track_trusted_probability,
            time_probability=settings.track_time_probability_enabled,
            matching_threshold=settings.matching_probability_threshold,
            huge_timestamp_ends=settings.huge_timestamp_ends_segment,
            huge_timestamp_seconds=settings.huge_timestamp_seconds,
            end_for_speed=settings.track_end_segment_for_speed,
            segment_max_length=settings.track_segment_max_length,
            size_ranges_px=size_ranges_px,
            split=settings.blob_split_algorithm == "threshold",
            split_fill=settings.blob_split_algorithm in ("threshold", "fill"),
            split_threshold=max(settings.threshold, settings.track_threshold),
            split_global_shrink=settings.blob_split_global_shrink_limit,
            reference_area=reference_area,
            largest_area=largest_area or reference_area,
            manual_matches=dict(settings.manual_matches),
            manual_splits={int(f): list(b) for f, b in settings.manual_splits.items()},
        )


@dataclass
class TrackingResult:
    """Blobs after splitting, which blob each slot has per frame, and the tracklets."""

    detections: Detections
    assignment: np.ndarray  # (frames, N) row in ``detections`` or -1
    tracklets: Tracklets
    tracklet_of: np.ndarray  # (frames, N) tracklet id or -1
    probability: np.ndarray  # (frames, N) probability of the chosen edge (nan: none/new)


def prediction_weights(decay: float, max_gap: int) -> np.ndarray:
    """Cumulative weights W[g] = sum_{f=1..g} w(f), w(f) = (1+λ⁴)/(1+λ⁴·f) (TRex App. 10):
    how many frames' worth of velocity a slot lost for g frames is assumed to have moved."""
    lam4 = decay ** 4
    f = np.arange(1, max_gap + 1, dtype=float)
    w = (1 + lam4) / (1 + lam4 * f)
    return np.concatenate([[0.0], np.cumsum(w)])


def edge_probabilities(pred: np.ndarray, last: np.ndarray, blobs: np.ndarray, dt_frame: float,
                       time_term: np.ndarray, max_speed_px: float) -> np.ndarray:
    """P = S·A'·T' for every slot (rows) × blob (columns), TRex v1.1.9 ``Individual::probability``."""
    delta = blobs[None, :, :] - pred[:, None, :]
    r = np.hypot(delta[..., 0], delta[..., 1]) / max(dt_frame, 1e-9) / max_speed_px
    speed = 1.0 / (1.0 + r) ** 2
    a = pred - last  # predicted movement
    b = blobs[None, :, :] - last[:, None, :]  # movement to the blob
    na = np.hypot(a[:, 0], a[:, 1])[:, None]
    nb = np.hypot(b[..., 0], b[..., 1])
    cross = a[:, None, 0] * b[..., 1] - a[:, None, 1] * b[..., 0]
    dot = a[:, None, 0] * b[..., 0] + a[:, None, 1] * b[..., 1]
    theta = np.abs(np.arctan2(cross, dot))
    angle = np.where((na > 1) & (nb > 1), 0.9 + 0.1 * (1 - theta / np.pi) ** 2, 1.0)
    return speed * angle * time_term[:, None]


def _assign_clusters(prob: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Maximise the summed probability per cluster of competing slots/blobs (Hungarian)."""
    n_rows, n_cols = prob.shape
    edges = prob >= threshold
    if not edges.any():
        return []
    r, c = np.nonzero(edges)
    graph = coo_matrix((np.ones(len(r)), (r, n_rows + c)), shape=(n_rows + n_cols,) * 2)
    _, component = connected_components(graph, directed=False)
    pairs: list[tuple[int, int]] = []
    row_comp, col_comp = component[:n_rows], component[n_rows:]
    for comp in np.unique(component[r]):
        rows = np.flatnonzero((row_comp == comp) & edges.any(axis=1))
        cols = np.flatnonzero((col_comp == comp) & edges.any(axis=0))
        if len(rows) == 1 and len(cols) == 1:
            pairs.append((int(rows[0]), int(cols[0])))
            continue
        sub = prob[np.ix_(rows, cols)]
        cost = np.where(sub >= threshold, -sub, 1.0)  # impossible edges cost more than any real one
        ri, ci = linear_sum_assignment(cost)
        pairs += [(int(rows[i]), int(cols[j])) for i, j in zip(ri, ci) if sub[i, j] >= threshold]
    return pairs


class _Blobs:
    """The candidate blobs of one frame, growing when merged blobs are split."""

    def __init__(self, det: Detections, frame: int) -> None:
        rows = det.rows(frame)
        self.row = np.arange(rows.start, rows.stop, dtype=np.int64)
        self.pos = np.column_stack([det["x"][rows], det["y"][rows]]).astype(float)
        self.area = det["area"][rows].astype(float)
        self.blob_id = det["blob_id"][rows]
        self.alive = np.ones(len(self.row), bool)

    def add(self, parts: dict[str, np.ndarray], first_row: int) -> np.ndarray:
        k = len(parts["x"])
        new = np.arange(first_row, first_row + k, dtype=np.int64)
        self.row = np.concatenate([self.row, new])
        self.pos = np.vstack([self.pos, np.column_stack([parts["x"], parts["y"]])])
        self.area = np.concatenate([self.area, parts["area"]])
        self.blob_id = np.concatenate([self.blob_id, parts["blob_id"]])
        self.alive = np.concatenate([self.alive, np.ones(k, bool)])
        return np.arange(len(self.row) - k, len(self.row))


def track(detections: Detections, params: TrackingParams, times: np.ndarray | None = None,
          progress: Callable[..., None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> TrackingResult:
    """Link the detections of every frame into ``params.n_individuals`` slots and tracklets."""
    n_frames = detections.n_frames
    n = params.n_individuals
    fps = params.fps
    if times is None:
        times = np.arange(n_frames) / fps
    t_max = params.max_reassign_time
    max_gap = int(np.ceil((t_max + 1) * fps)) + 2
    weights = prediction_weights(params.speed_decay, max_gap)
    min_area = min(lo for lo, _ in params.size_ranges_px)
    max_area = max(hi for _, hi in params.size_ranges_px)
    recent_len = int(np.ceil(fps)) + 1

    last_pos = np.full((n, 2), np.nan)
    last_frame = np.full(n, -1, np.int64)
    hist_pos = np.full((n, HISTORY, 2), np.nan)
    hist_frame = np.full((n, HISTORY), -1, np.int64)
    recent = np.full((n, recent_len), -np.inf)  # times of recently assigned frames
    area_hist = np.full((n, 10), np.nan)  # recent blob areas per slot (merges make blobs grow)
    on_split = np.zeros(n, bool)  # the slot's last blob was a part of a split blob
    current = np.full(n, -1, np.int64)  # open tracklet id per slot
    started = np.zeros(n, np.int64)
    tracklet_rows: list[list[int]] = []  # id, slot, start, end, reason
    assignment = np.full((n_frames, n), -1, np.int64)
    probability = np.full((n_frames, n), np.nan)
    extra: list[dict[str, np.ndarray]] = []  # parts of split blobs, appended after the originals
    n_extra = 0
    base = len(detections)

    single_max = params.unknown_merge_factor * params.largest_area if params.largest_area > 0 \
        else np.inf

    def expected_area(slot: int) -> float:
        """Largest area this slot's animal may plausibly have before it counts as a merge."""
        if np.isfinite(area_hist[slot]).any():
            return params.merge_area_factor * float(np.nanmedian(area_hist[slot]))
        return single_max

    def close(slot: int, end: int, reason: int) -> None:
        tracklet_rows[current[slot]][3] = end
        tracklet_rows[current[slot]][4] = reason
        current[slot] = -1

    def open_(slot: int, frame: int) -> None:
        current[slot] = len(tracklet_rows)
        started[slot] = frame
        tracklet_rows.append([len(tracklet_rows), slot, frame, frame, 0])

    for t in range(n_frames):
        if should_stop is not None and t % 50 == 0 and should_stop():
            raise Cancelled("tracking cancelled")
        now = times[t]
        dt_frame = now - times[t - 1] if t > 0 else 1.0 / fps
        blobs = _Blobs(detections, t)
        seen = last_frame >= 0
        lost_for = np.where(seen, now - times[np.maximum(last_frame, 0)], np.inf)
        if params.time_probability:
            active = seen & (lost_for <= t_max)
        else:
            active = seen.copy()
        slots = np.flatnonzero(active)
        # -- prediction (vectorised over slots) --------------------------------------------------
        gap = np.clip(t - last_frame[slots], 1, max_gap)
        d_pos = np.diff(hist_pos[slots], axis=1)
        d_frame = np.diff(hist_frame[slots], axis=1).astype(float)
        valid = (d_frame > 0) & np.isfinite(d_pos).all(axis=2) & (hist_frame[slots, :-1] >= 0)
        per_frame = np.where(valid[..., None], d_pos / np.where(d_frame > 0, d_frame, 1)[..., None], 0)
        counts = valid.sum(axis=1)
        velocity = per_frame.sum(axis=1) / np.maximum(counts, 1)[:, None]
        speed = np.hypot(velocity[:, 0], velocity[:, 1])
        cap = params.max_speed_px / fps
        velocity *= np.where(speed > cap, cap / np.maximum(speed, 1e-9), 1.0)[:, None]
        pred = last_pos[slots] + velocity * weights[gap][:, None]
        # -- time term -----------------------------------------------------------------------------
        if params.time_probability:
            in_last_second = (recent[slots] > now - 1.0).sum(axis=1)
            lost = lost_for[slots]
            term = (1 - np.minimum(1, np.maximum(0, lost - 1 / fps) / t_max)) * np.minimum(
                1, (in_last_second - 1) / min(fps, 5) + 0.1)
            time_term = 0.25 + 0.75 * np.clip(term, 0, 1)
            time_term[lost > t_max] = 0.0
        else:
            time_term = np.ones(len(slots))
        prob = edge_probabilities(pred, last_pos[slots], blobs.pos, dt_frame, time_term,
                                  params.max_speed_px) if len(blobs.pos) else np.zeros((len(slots), 0))
        # -- manual matches first --------------------------------------------------------------------
        forced: dict[int, int] = {}
        for identity, blob_id in params.manual_matches.get(t, {}).items():
            hit = np.flatnonzero(blobs.blob_id == blob_id)
            if 0 <= identity < n and len(hit):
                forced[int(identity)] = int(hit[0])
        # -- merged blobs: split or nobody gets them -------------------------------------------------
        excluded = np.zeros(n, bool)  # slots inside an unsplittable merge this frame
        if len(slots) and prob.shape[1]:
            best = np.where(prob.max(axis=1) >= params.matching_threshold, prob.argmax(axis=1), -1)
            claims = np.bincount(best[best >= 0], minlength=prob.shape[1])
            for b in range(prob.shape[1]):
                claimants = slots[best == b]
                oversized = blobs.area[b] > max_area
                grown = False
                if len(claimants) == 1:
                    grown = blobs.area[b] > expected_area(claimants[0])
                if len(claimants) < 2 and not (oversized or grown):
                    continue
                if len(claimants) >= 2:
                    k = len(claimants)
                elif grown or params.reference_area <= 0:
                    k = 2
                else:
                    k = max(2, int(round(blobs.area[b] / params.reference_area)))
                parts = None
                row = int(blobs.row[b])
                if row < base and row in detections.pixels:
                    top, left, crop = detections.pixels[row]
                    if params.split:
                        parts = split_blob(crop, top, left, k, params.split_threshold,
                                           params.split_global_shrink)
                    if parts is None and params.split_fill and len(claimants) >= 2:
                        parts = split_blob_fill(crop, top, left, pred[best == b])
                if parts is not None:
                    parts["frame"] = np.full(k, t, np.int32)
                    extra.append(parts)
                    new_cols = blobs.add(parts, base + n_extra)
                    n_extra += k
                    blobs.alive[b] = False
                    new_prob = edge_probabilities(pred, last_pos[slots], blobs.pos[new_cols], dt_frame,
                                                  time_term, params.max_speed_px)
                    prob = np.hstack([prob, new_prob])
                else:  # several animals in one blob, and no way to tell them apart: nobody gets it
                    blobs.alive[b] = False
                    excluded[claimants] = True
            if not blobs.alive.all():
                prob[:, ~blobs.alive] = 0.0
        # -- matching (Hungarian per cluster) --------------------------------------------------------
        taken_slots = np.zeros(n, bool)
        taken_blobs = np.zeros(len(blobs.row), bool)
        chosen = np.full(n, -1, np.int64)  # column in blobs
        chosen_p = np.full(n, np.nan)
        for slot, col in forced.items():
            chosen[slot], taken_slots[slot], taken_blobs[col] = col, True, True
        if len(slots) and prob.shape[1]:
            usable = prob.copy()
            usable[taken_slots[slots] | excluded[slots], :] = 0.0
            usable[:, taken_blobs] = 0.0
            for i, j in _assign_clusters(usable, params.matching_threshold):
                slot = int(slots[i])
                chosen[slot], chosen_p[slot] = j, prob[i, j]
                taken_slots[slot], taken_blobs[j] = True, True
        # a slot whose blob suddenly grew has an animal merged into it: nobody gets that blob
        for slot in np.flatnonzero(chosen >= 0):
            if slot in forced:
                continue
            col = chosen[slot]
            if blobs.row[col] < base and blobs.area[col] > expected_area(slot):
                blobs.alive[col] = False
                taken_blobs[col] = True  # not free for re-attachment either
                chosen[slot], chosen_p[slot] = -1, np.nan
                excluded[slot] = True
        ambiguous = np.zeros(n, bool)
        if len(slots) and prob.shape[1]:
            rivals = prob.copy()
            for i, slot in enumerate(slots):
                j = chosen[slot]
                if j < 0 or slot in forced:
                    continue
                own = prob[i, j]
                rivals[i, j] = 0.0
                blob_rival = rivals[i].max(initial=0.0)  # another blob for this slot
                col = prob[:, j].copy()
                col[i] = 0.0
                slot_rival = col.max(initial=0.0)  # another slot for this blob
                rivals[i, j] = own
                limit = params.ambiguity_ratio * own
                if max(blob_rival, slot_rival) >= max(limit, params.matching_threshold):
                    ambiguous[slot] = True
        # -- re-attach slots lost long enough (or never seen) to leftover blobs ---------------------
        # (never a blob that looks like two animals: a tracklet must not start inside a merge)
        is_part = blobs.row >= base  # parts of a split blob are one animal each already
        leftover = np.flatnonzero(blobs.alive & ~taken_blobs & (blobs.area >= min_area) & (
            is_part | ((blobs.area <= max_area) & (blobs.area <= single_max))))
        if len(leftover):
            never = np.flatnonzero(~seen & ~taken_slots)
            order = leftover[np.lexsort((blobs.pos[leftover, 0], blobs.pos[leftover, 1]))]
            for slot, col in zip(never, order):  # first frame: top-left to bottom-right
                chosen[slot], taken_slots[slot], taken_blobs[col] = col, True, True
            leftover = np.array([c for c in leftover if not taken_blobs[c]], dtype=np.int64)
            lost_slots = np.flatnonzero(seen & ~taken_slots & ~excluded & (lost_for >= t_max))
            if len(leftover) and len(lost_slots):
                d2 = ((blobs.pos[leftover][None] - last_pos[lost_slots][:, None]) ** 2).sum(axis=2)
                score = 0.1 + 1.0 / np.maximum(d2 * lost_for[lost_slots][:, None], 1e-9)
                while np.isfinite(score).any() and score.size:
                    i, j = np.unravel_index(np.nanargmax(score), score.shape)
                    if not np.isfinite(score[i, j]):
                        break
                    slot, col = int(lost_slots[i]), int(leftover[j])
                    chosen[slot], taken_slots[slot], taken_blobs[col] = col, True, True
                    score[i, :] = -np.inf
                    score[:, j] = -np.inf
                    if (score == -np.inf).all():
                        break
        # -- update slots and tracklets ---------------------------------------------------------------
        split_here = set(params.manual_splits.get(t, ()))
        for slot in range(n):
            col = int(chosen[slot])
            if col < 0:
                if current[slot] >= 0 and last_frame[slot] == t - 1:
                    reason = LOST_FOR_ONE_FRAME | (MERGED if excluded[slot] else NO_BLOB)
                    close(slot, t - 1, reason)
                continue
            pos = blobs.pos[col]
            reason = 0
            if current[slot] >= 0:
                if last_frame[slot] != t - 1:
                    reason |= LOST_FOR_ONE_FRAME
                if params.huge_timestamp_ends and dt_frame >= params.huge_timestamp_seconds:
                    reason |= TIMESTAMP_TOO_DIFFERENT
                if slot in forced:
                    reason |= MANUAL_MATCH
                if int(blobs.blob_id[col]) in split_here:
                    reason |= MANUAL_SPLIT
                elif np.isnan(chosen_p[slot]) or chosen_p[slot] < params.trusted_probability:
                    reason |= PROBABILITY_TOO_SMALL
                if ambiguous[slot]:
                    reason |= AMBIGUOUS
                if blobs.row[col] >= base or on_split[slot]:
                    # parts of a split blob are not whole animals and may trade places from
                    # one frame to the next: each gets a tracklet of its own
                    reason |= MERGED
                elapsed = now - times[last_frame[slot]]
                moved = float(np.hypot(*(pos - last_pos[slot])))
                if params.end_for_speed and elapsed > 0 and moved / elapsed >= 0.99 * params.max_speed_px:
                    reason |= WEIRD_DISTANCE
                if params.segment_max_length > 0 and (t - started[slot]) / fps >= params.segment_max_length:
                    reason |= MAX_SEGMENT_LENGTH
                if reason:
                    close(slot, int(last_frame[slot]), reason)
            if current[slot] < 0:
                open_(slot, t)
            tracklet_rows[current[slot]][3] = t
            assignment[t, slot] = blobs.row[col]
            probability[t, slot] = chosen_p[slot]
            if last_frame[slot] != t - 1:  # velocity history restarts after a gap
                hist_pos[slot] = np.nan
                hist_frame[slot] = -1
            hist_pos[slot, :-1] = hist_pos[slot, 1:]
            hist_frame[slot, :-1] = hist_frame[slot, 1:]
            hist_pos[slot, -1] = pos
            hist_frame[slot, -1] = t
            recent[slot, :-1] = recent[slot, 1:]
            recent[slot, -1] = now
            if blobs.row[col] < base:  # split parts say nothing about the animal's size
                area_hist[slot, :-1] = area_hist[slot, 1:]
                area_hist[slot, -1] = blobs.area[col]
            last_pos[slot] = pos
            last_frame[slot] = t
            on_split[slot] = blobs.row[col] >= base
        if progress is not None and (t % 100 == 0 or t == n_frames - 1):
            progress(t + 1, n_frames, "tracking")

    final, remap = _with_split_parts(detections, extra)
    assignment = np.where(assignment >= 0, remap[np.maximum(assignment, 0)], -1)
    tracklets = Tracklets.from_rows([tuple(r) for r in tracklet_rows])
    tracklet_of = np.full((n_frames, n), -1, np.int64)
    for tid, slot, a, b in zip(tracklets.id, tracklets.individual, tracklets.start, tracklets.end):
        tracklet_of[a: b + 1, slot] = np.where(assignment[a: b + 1, slot] >= 0, tid, -1)
    return TrackingResult(final, assignment, tracklets, tracklet_of, probability)


def _with_split_parts(detections: Detections, extra: list[dict[str, np.ndarray]]
                      ) -> tuple[Detections, np.ndarray]:
    """Detections with the parts of split blobs inserted in frame order, and old row → new row."""
    if not extra:
        return detections, np.arange(len(detections), dtype=np.int64)
    columns = {}
    for c in COLUMNS:
        parts = [p[c] for p in extra]
        columns[c] = np.concatenate([detections[c], *[np.asarray(p, dtype=detections[c].dtype)
                                                      for p in parts]])
    order = np.argsort(columns["frame"], kind="stable")
    remap = np.empty(len(order), dtype=np.int64)
    remap[order] = np.arange(len(order))
    columns = {c: v[order] for c, v in columns.items()}
    counts = np.bincount(columns["frame"], minlength=detections.n_frames)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    pixels = {int(remap[row]): crop for row, crop in detections.pixels.items()}
    return Detections(columns, offsets, pixels), remap
